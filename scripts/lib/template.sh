# Sourced by scripts that write a file from a template (config/templates/*.in).
#
#   render_template <template> <output> NAME=value...
#
# Replaces each @NAME@ of the template with its value and writes the result to <output>. Fails
# when the template still holds an @NAME@ that no argument gave a value, so that a template and
# its callers cannot drift apart unnoticed.
render_template() {
  local template="$1" output="$2"
  shift 2
  local text pair name value missing
  text="$(cat "$template")" || return 1
  for pair in "$@"; do
    name="${pair%%=*}"
    value="${pair#*=}"
    text="${text//@"$name"@/"$value"}"
  done
  missing="$(grep -o '@[A-Z_][A-Z0-9_]*@' <<<"$text" | sort -u | tr '\n' ' ' || true)"
  if [ -n "$missing" ]; then
    echo "render_template: $template: no value for ${missing% }" >&2
    return 1
  fi
  printf '%s\n' "$text" >"$output"
}
