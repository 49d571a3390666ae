// test_help.cpp: every program explains itself. Each executable that
// examples/meson.build builds answers --help with exit status 0, a usage line,
// an example and a described option for every name its parser accepts (the
// parser's own list: --list-options prints its option table). The ./loom script
// lists its commands with `help`, and each command answers --help.
#include <doctest/doctest.h>

#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "tests/test_util.h"

namespace loom::test {

namespace {

// A command's stdout (its stderr dropped) and exit status.
CommandOutput run(const std::string& command) { return run_command(command + " 2>/dev/null"); }

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// The names in `executable('<name>', ...)` of a meson.build.
std::vector<std::string> executables_in(const std::string& meson_build) {
  std::vector<std::string> names;
  const std::string text = read_text(meson_build);
  const std::regex executable(R"(executable\(\s*'([A-Za-z0-9_]+)')");
  for (auto it = std::sregex_iterator(text.begin(), text.end(), executable); it != std::sregex_iterator(); ++it)
    names.push_back((*it)[1].str());
  return names;
}

}  // namespace

TEST_CASE("help: every example program explains each option its parser accepts") {
  const std::vector<std::string> programs = executables_in(std::string(LOOM_SOURCE_ROOT) + "/examples/meson.build");
  REQUIRE(programs.size() >= 10);
  for (const std::string& name : programs) {
    INFO(name);
    const std::string path = std::string(LOOM_BUILD_ROOT) + "/examples/" + name;
    const CommandOutput help = run(path + " --help");
    CHECK(help.status == 0);
    CHECK(contains(help.text, name + ": "));  // what it does
    CHECK(contains(help.text, "usage: " + name));
    CHECK(contains(help.text, "\nexample:\n  "));
    const CommandOutput listed = run(path + " --list-options");
    CHECK(listed.status == 0);
    const std::vector<std::string> help_lines = lines_of(help.text);
    for (const std::string& option : lines_of(listed.text)) {
      INFO(option);
      CHECK(option.rfind("--", 0) == 0);
      // "  --name [VALUE]" on a line of its own, then its description: text and the default.
      size_t at = help_lines.size();
      for (size_t i = 0; i < help_lines.size(); ++i)
        if (help_lines[i] == "  " + option || help_lines[i].rfind("  " + option + " ", 0) == 0) at = i;
      REQUIRE(at + 1 < help_lines.size());
      const std::string description = help_lines[at + 1];
      CHECK(description.rfind("      ", 0) == 0);
      CHECK(description.find_first_not_of(' ') != std::string::npos);
      std::string rest;
      for (size_t i = at + 1; i < help_lines.size() && help_lines[i].rfind("      ", 0) == 0; ++i)
        rest += help_lines[i] + " ";
      CHECK(contains(rest, "Default: "));
      CHECK(!contains(rest, "Default: ."));  // a default that says something
    }
    // An option outside the table is refused, not ignored.
    CHECK(run(path + " --no-such-option").status != 0);
  }
}

TEST_CASE("help: the shell script of examples/ answers --help with its defaults and an example") {
  const CommandOutput help = run("bash " + std::string(LOOM_SOURCE_ROOT) + "/examples/bench_scaling.sh --help");
  CHECK(help.status == 0);
  CHECK(contains(help.text, "bench_scaling.sh [CONFIG] [STEPS] [ROUNDS]"));
  CHECK(contains(help.text, "defaults: "));
  CHECK(contains(help.text, "example: "));
  CHECK(!contains(help.text, "set -euo"));
}

TEST_CASE("help: ./loom lists its commands, and each explains itself without building") {
  const std::string loom = "bash " + std::string(LOOM_SOURCE_ROOT) + "/loom";
  const CommandOutput listing = run(loom + " help");
  CHECK(listing.status == 0);
  CHECK(run(loom + " --help").text == listing.text);
  // The commands the script dispatches: the labels of its last case statement.
  const std::string script = read_text(std::string(LOOM_SOURCE_ROOT) + "/loom");
  const std::string dispatch = script.substr(script.rfind("case \"$command\" in"));
  const std::regex label(R"(\n  ([a-z]+)\))");
  std::vector<std::string> commands;
  for (auto it = std::sregex_iterator(dispatch.begin(), dispatch.end(), label); it != std::sregex_iterator(); ++it)
    commands.push_back((*it)[1].str());
  REQUIRE(commands.size() >= 4);
  commands.push_back("help");
  for (const std::string& command : commands) {
    INFO(command);
    CHECK(std::regex_search(listing.text, std::regex("\n  " + command + " +[a-z]")));
    const CommandOutput help = run(loom + " " + command + " --help");
    CHECK(help.status == 0);
    CHECK(contains(help.text, "./loom " + command + ": "));
    CHECK(contains(help.text, "example: ./loom " + command));
  }
  CHECK(run(loom + " no-such-command").status == 2);
}

}  // namespace loom::test
