// The command dispatcher: parse the command line, run the stages it asks for, turn failures into
// the documented exit codes and a JSON report. main() is a one-line call to run_app().
#pragma once

#include <string>
#include <vector>

namespace epc {

int run_app(const std::vector<std::string>& args);

}  // namespace epc
