#include "epc/app/app.hpp"

int main(int argc, char** argv) { return epc::run_app(std::vector<std::string>(argv + 1, argv + argc)); }
