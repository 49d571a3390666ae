// command_line.h: the command lines of the example programs, from one table.
//
// Each program describes itself once: what it does, its arguments, and per
// option the value it takes, its default, what it does and what it writes where,
// and the code that applies it. Parsing and --help both come from that table, so
// an option cannot be accepted without being explained:
//
//   examples::CommandLine cli("steps", "counts steps", "steps --to 3");
//   int64_t to = 10;
//   cli.option("--to", "N", "10", "count up to N.", [&](const auto& v) { to = v.positive_integer(); });
//   const auto parsed = cli.parse(argc, argv);
//   if (parsed.exit) return 0;  // --help was answered
//
// Every program answers
//   --help, -h        what it does, its arguments and options, an example (stdout, exit 0);
//   --list-options    the table's option names, one a line (the tests compare them with --help).
// An unknown option, a missing value or a wrong count of arguments is a
// loom::Error that ends with the usage line.
#pragma once

#include <cstdint>
#include <cstdio>
#include <exception>
#include <functional>
#include <initializer_list>
#include <string>
#include <vector>

#include "engine/error.h"

namespace loom::examples {

// `text` as an integer of at least `minimum`, or an error "<program>: <flag> expects
// a positive integer, got '<text>'" (trailing characters, signs and overflow included).
inline int64_t integer_at_least(const std::string& program, const std::string& flag, const std::string& text,
                                int64_t minimum) {
  size_t used = 0;
  int64_t n = 0;
  try {
    n = std::stoll(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  LOOM_CHECK(used == text.size() && n >= minimum, program, ": ", flag, " expects ",
             minimum == 1 ? std::string("a positive integer") : "an integer >= " + std::to_string(minimum), ", got '",
             text, "'");
  return n;
}

inline int64_t positive_integer(const std::string& program, const std::string& flag, const std::string& text) {
  return integer_at_least(program, flag, text, 1);
}

// `text` as a number, or an error naming the flag.
inline double number(const std::string& program, const std::string& flag, const std::string& text) {
  size_t used = 0;
  double x = 0;
  try {
    x = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  LOOM_CHECK(used == text.size() && used > 0, program, ": ", flag, " expects a number, got '", text, "'");
  return x;
}

// An option's value as its apply function gets it; the conversions name the option in their errors.
struct OptionValue {
  const std::string& program;
  const std::string& option;
  const std::string& text;  // "" for a flag, or an optional value left out

  int64_t positive_integer() const { return examples::positive_integer(program, option, text); }
  int64_t integer_at_least(int64_t minimum) const { return examples::integer_at_least(program, option, text, minimum); }
  double number() const { return examples::number(program, option, text); }
  // "a,b,c" as its items; an empty item is an error.
  std::vector<std::string> list() const {
    std::vector<std::string> items;
    size_t start = 0;
    for (;;) {
      const size_t comma = text.find(',', start);
      items.push_back(text.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
      LOOM_CHECK(!items.back().empty(), program, ": ", option, " expects a comma-separated list, got '", text, "'");
      if (comma == std::string::npos) return items;
      start = comma + 1;
    }
  }
  // The text when it is one of `choices`, else an error listing them.
  const std::string& one_of(std::initializer_list<const char*> choices) const {
    std::string listed;
    for (const char* c : choices) {
      if (text == c) return text;
      listed += (listed.empty() ? "" : " or ") + std::string(c);
    }
    LOOM_FAIL(program, ": ", option, " expects ", listed, ", got '", text, "'");
  }
};

class CommandLine {
 public:
  using Apply = std::function<void(const OptionValue& value)>;

  struct Option {
    std::string name;          // "--steps"
    std::string value;         // "N"; "" for a flag
    std::string default_text;  // what holds without the option
    std::string help;          // what it does, and what it writes where
    Apply apply;               // called with the value ("" for a flag)
    bool value_optional = false;
  };

  struct Argument {
    std::string name, help;
    bool optional = false, repeated = false;
  };

  struct Parsed {
    std::vector<std::string> arguments;  // the positional ones, in order
    bool exit = false;                   // --help or --list-options was answered: exit 0
  };

  // `summary`: what the program does (one paragraph); `example`: one command.
  CommandLine(std::string program, std::string summary, std::string example)
      : program_(std::move(program)), summary_(std::move(summary)), example_(std::move(example)) {}

  const std::string& program() const { return program_; }

  // A positional argument (in the order given); the last may be `repeated`.
  void argument(std::string name, std::string help, bool optional = false, bool repeated = false) {
    arguments_.push_back({std::move(name), std::move(help), optional, repeated});
  }
  // An option with a value ("N", "PATH"): apply gets the value.
  void option(std::string name, std::string value, std::string default_text, std::string help, Apply apply) {
    options_.push_back({std::move(name), std::move(value), std::move(default_text), std::move(help), std::move(apply)});
  }
  // An option whose value may be left out (apply gets "" then).
  void option_with_optional_value(std::string name, std::string value, std::string default_text, std::string help,
                                  Apply apply) {
    option(std::move(name), std::move(value), std::move(default_text), std::move(help), std::move(apply));
    options_.back().value_optional = true;
  }
  // A flag: apply is called (with "") when it is given.
  void flag(std::string name, std::string help, Apply apply) {
    option(std::move(name), "", "off", std::move(help), std::move(apply));
  }
  // A paragraph after the options (what the program writes, how it behaves).
  void note(std::string text) { notes_.push_back(std::move(text)); }
  // Another way to start the program, shown under the usage line.
  void usage_variant(std::string line) { usage_variants_.push_back(std::move(line)); }

  std::string usage() const {
    std::string line = "usage: " + program_;
    for (const Argument& a : arguments_)
      line += (a.optional ? " [" + a.name + "]" : " " + a.name) + (a.repeated ? "..." : "");
    if (!options_.empty()) line += " [options]";
    for (const std::string& v : usage_variants_) line += "\n       " + v;
    return line;
  }

  std::string help() const {
    std::string text = wrap(program_ + ": " + summary_, 0) + "\n" + usage() + "\n";
    if (!arguments_.empty()) {
      text += "\narguments:\n";
      for (const Argument& a : arguments_) text += "  " + a.name + "\n" + indent(a.help);
    }
    text += "\noptions:\n";
    for (const Option& o : options_) {
      const std::string value = o.value.empty() ? "" : o.value_optional ? " [" + o.value + "]" : " " + o.value;
      text += "  " + o.name + value + "\n" + indent(o.help + " Default: " + o.default_text + ".");
    }
    text += "  -h, --help\n" + indent("print this help and exit.");
    for (const std::string& n : notes_) text += "\n" + wrap(n, 2);
    text += "\nexample:\n  " + example_ + "\n";
    return text;
  }

  // Parses argv[1..]: options of the table anywhere, the rest positional.
  Parsed parse(int argc, char** argv) const {
    Parsed parsed;
    for (int i = 1; i < argc; ++i) {
      const std::string arg = argv[i];
      if (arg == "-h" || arg == "--help") {
        std::fputs(help().c_str(), stdout);
        parsed.exit = true;
        return parsed;
      }
      if (arg == "--list-options") {
        for (const Option& o : options_) std::printf("%s\n", o.name.c_str());
        parsed.exit = true;
        return parsed;
      }
    }
    for (int i = 1; i < argc; ++i) {
      const std::string arg = argv[i];
      if (arg.rfind("--", 0) != 0 || arg.size() == 2) {
        parsed.arguments.push_back(arg);
        continue;
      }
      const Option* option = nullptr;
      for (const Option& o : options_)
        if (o.name == arg) option = &o;
      LOOM_CHECK(option != nullptr, program_, ": unknown option '", arg, "' (", program_, " --help lists them)\n",
                 usage());
      std::string value;
      if (!option->value.empty()) {
        // A value that may be left out is the next argument only when that is no option.
        const bool next_is_value =
            i + 1 < argc && (!option->value_optional || std::string(argv[i + 1]).rfind("--", 0) != 0);
        LOOM_CHECK(next_is_value || option->value_optional, program_, ": ", arg, " needs a value (", option->value,
                   ")\n", usage());
        if (next_is_value) value = argv[++i];
      }
      option->apply(OptionValue{program_, option->name, value});
    }
    size_t required = 0;
    for (const Argument& a : arguments_) required += !a.optional;
    const bool unbounded = !arguments_.empty() && arguments_.back().repeated;
    LOOM_CHECK(parsed.arguments.size() >= required && (unbounded || parsed.arguments.size() <= arguments_.size()),
               program_,
               ": expected ", required == arguments_.size() && !unbounded ? "" : "at least ", required, " argument",
               required == 1 ? "" : "s", ", got ", parsed.arguments.size(),
               parsed.arguments.empty() ? "" : " ('" + parsed.arguments.back() + "' last)", "\n", usage());
    return parsed;
  }

 private:
  // `text` wrapped at 100 columns, each line indented by `by` spaces.
  static std::string wrap(const std::string& text, int by) {
    std::string out, line;
    const std::string pad(by, ' ');
    size_t start = 0;
    while (start < text.size()) {
      size_t end = text.find(' ', start);
      if (end == std::string::npos) end = text.size();
      const std::string word = text.substr(start, end - start);
      if (!line.empty() && line.size() + 1 + word.size() > 100 - static_cast<size_t>(by)) {
        out += pad + line + "\n";
        line.clear();
      }
      line += (line.empty() ? "" : " ") + word;
      start = end + 1;
    }
    if (!line.empty()) out += pad + line + "\n";
    return out;
  }
  static std::string indent(const std::string& text) { return wrap(text, 6); }

  std::string program_, summary_, example_;
  std::vector<Argument> arguments_;
  std::vector<Option> options_;
  std::vector<std::string> notes_, usage_variants_;
};

}  // namespace loom::examples
