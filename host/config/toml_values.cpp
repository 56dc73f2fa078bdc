#include "config/toml_values.hpp"

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <cctype>
#include <cmath>
#include <sstream>

namespace upparat::config::detail {

namespace {

using JsonWriter = rapidjson::Writer<rapidjson::StringBuffer>;

void write_string(JsonWriter& writer, const std::string& text) {
  writer.String(text.data(), static_cast<rapidjson::SizeType>(text.size()));
}

void write_json(JsonWriter& writer, const toml::value& value) {
  switch (value.type()) {
    case toml::value_t::string:
      write_string(writer, value.as_string().str);
      break;
    case toml::value_t::array:
      writer.StartArray();
      for (const auto& item : value.as_array()) {
        write_json(writer, item);
      }
      writer.EndArray();
      break;
    case toml::value_t::table: {
      std::map<std::string, const toml::value*> sorted;
      for (const auto& [k, v] : value.as_table()) {
        sorted[k] = &v;
      }
      writer.StartObject();
      for (const auto& [k, v] : sorted) {
        write_string(writer, k);
        write_json(writer, *v);
      }
      writer.EndObject();
      break;
    }
    case toml::value_t::boolean:
      writer.Bool(value.as_boolean());
      break;
    case toml::value_t::integer:
      writer.Int64(value.as_integer());
      break;
    case toml::value_t::floating:
      // JSON has no inf or nan: those are handed over as their TOML spelling, in a string.
      if (std::isfinite(value.as_floating())) {
        writer.Double(value.as_floating());
      } else {
        write_string(writer, scalar_text(value));
      }
      break;
    default:
      // Dates and times as their TOML spelling, in a string.
      write_string(writer, scalar_text(value));
  }
}

}  // namespace

const char* type_name(toml::value_t type) {
  switch (type) {
    case toml::value_t::boolean:
      return "a boolean";
    case toml::value_t::integer:
      return "an integer";
    case toml::value_t::floating:
      return "a float";
    case toml::value_t::string:
      return "a string";
    case toml::value_t::array:
      return "an array";
    case toml::value_t::table:
      return "a table";
    case toml::value_t::empty:
      return "nothing";
    default:
      return "a date/time";
  }
}
/// A TOML scalar in its TOML spelling (strings as they are).
std::string scalar_text(const toml::value& value) {
  switch (value.type()) {
    case toml::value_t::string:
      return value.as_string().str;
    case toml::value_t::boolean:
      return value.as_boolean() ? "true" : "false";
    case toml::value_t::integer:
      return std::to_string(value.as_integer());
    default: {
      std::ostringstream out;
      out << value;
      std::string text = out.str();
      while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) {
        text.pop_back();
      }
      return text;
    }
  }
}
std::string to_json(const toml::value& value) {
  rapidjson::StringBuffer buffer;
  JsonWriter writer(buffer);
  write_json(writer, value);
  return {buffer.GetString(), buffer.GetSize()};
}

/// Flattens a plugin's table into dotted keys (nested tables), arrays as JSON.
void flatten(const toml::value& table, const std::string& prefix,
             std::map<std::string, std::string>& out) {
  for (const auto& [key, value] : table.as_table()) {
    std::string full = prefix.empty() ? key : prefix + "." + key;
    if (value.is_table()) {
      flatten(value, full, out);
    } else if (value.is_array()) {
      out[full] = to_json(value);
    } else {
      out[full] = scalar_text(value);
    }
  }
}
}  // namespace upparat::config::detail
