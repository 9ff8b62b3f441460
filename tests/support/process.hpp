// Running the real binaries as operators and schedulers do: argv, an environment, stdout and
// stderr captured to files, the exit code (128 + signal when killed).
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <stdexcept>
#include <string>
#include <vector>

#include "support/pg_test.hpp"

extern char** environ;

namespace epc::test {

struct Outcome {
    int exit_code = -1;
    std::string out;
    std::string err;
};

class Process {
public:
    enum Output { separate, merged };  // merged: stderr goes to stdout's file (Outcome::out)

    // `program` is looked up on PATH when it has no slash. `env`: the whole environment, or this
    // process's own when null.
    Process(const std::vector<std::string>& argv, const std::string& log_prefix,
            const std::vector<std::string>* env = nullptr, Output output = separate)
        : out_(log_prefix + ".out"), err_(output == merged ? "" : log_prefix + ".err") {
        std::vector<std::string> argv_s = argv, env_s = env ? *env : std::vector<std::string>();
        std::vector<char*> args, envp;
        for (auto& a : argv_s) args.push_back(a.data());
        args.push_back(nullptr);
        for (auto& e : env_s) envp.push_back(e.data());
        envp.push_back(nullptr);
        posix_spawn_file_actions_t actions;
        posix_spawn_file_actions_init(&actions);
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
        posix_spawn_file_actions_addopen(&actions, 1, out_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (err_.empty()) posix_spawn_file_actions_adddup2(&actions, 1, 2);
        else posix_spawn_file_actions_addopen(&actions, 2, err_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int rc = posix_spawnp(&pid_, args[0], &actions, nullptr, args.data(), env ? envp.data() : environ);
        posix_spawn_file_actions_destroy(&actions);
        if (rc != 0) throw std::runtime_error("cannot start " + argv.at(0));
    }
    ~Process() { stop(SIGKILL); }
    Process(const Process&) = delete;
    Process& operator=(const Process&) = delete;

    Outcome wait() {
        int status = 0;
        while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
        }
        pid_ = 0;
        return {WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status), read_file(out_),
                err_.empty() ? std::string() : read_file(err_)};
    }
    // Ends it with `signal` if it is still running.
    void stop(int signal) {
        if (pid_ <= 0) return;
        kill(pid_, signal);
        waitpid(pid_, nullptr, 0);
        pid_ = 0;
    }
    const std::string& out_path() const { return out_; }

private:
    pid_t pid_ = 0;
    std::string out_, err_;
};

// This process's environment with every variable named in `set` (NAME=VALUE) replaced or added.
inline std::vector<std::string> environment_with(const std::vector<std::string>& set) {
    std::vector<std::string> env;
    for (char** e = environ; *e; ++e) {
        std::string kv = *e;
        bool replaced = false;
        for (const std::string& s : set)
            if (kv.compare(0, s.find('=') + 1, s, 0, s.find('=') + 1) == 0) replaced = true;
        if (!replaced) env.push_back(kv);
    }
    env.insert(env.end(), set.begin(), set.end());
    return env;
}

}  // namespace epc::test
