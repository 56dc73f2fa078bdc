// Asks systemd-logind to reboot through plugin_system::reboot_via_logind, as the RAUC plugin's
// `restart = "logind"` does. tests/systemd/unit_test.sh runs it as the user upparat inside its
// container, without and then with config/50-upparat-reboot.rules.
//   upparat_reboot_tool [<bus address>]     exit 0: logind accepted the reboot

#include <chrono>
#include <iostream>
#include <string>

#include "system/system.hpp"

int main(int argc, char** argv) {
  const std::string address = argc > 1 ? argv[1] : "";
  auto rebooted = upparat::plugin_system::reboot_via_logind(address, std::chrono::seconds(20));
  if (!rebooted) {
    std::cerr << rebooted.error().message() << "\n";
    return 1;
  }
  std::cout << "reboot requested\n";
  return 0;
}
