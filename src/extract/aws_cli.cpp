#include "epc/extract/aws_cli.hpp"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <utility>

#include "epc/common/types.hpp"

namespace epc {

namespace fs = std::filesystem;

namespace {

// A file descriptor that is closed however the scope is left.
class Fd {
public:
    explicit Fd(int fd) : fd_(fd) {}
    Fd(Fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
    Fd(const Fd&) = delete;
    Fd& operator=(const Fd&) = delete;
    ~Fd() {
        if (fd_ >= 0) close(fd_);
    }
    int get() const { return fd_; }

private:
    int fd_;
};

// Unlinked at once: the output disappears with the descriptor, whatever happens to us.
Fd anonymous_temp_file() {
    std::string tmpl = (fs::temp_directory_path() / "epc-import-aws.XXXXXX").string();
    Fd out(mkostemp(tmpl.data(), O_CLOEXEC));
    if (out.get() < 0)
        throw Error(exit_internal, "cannot create a temporary file in " + fs::temp_directory_path().string());
    unlink(tmpl.c_str());
    return out;
}

pid_t spawn_aws(const std::vector<std::string>& args, int out, const std::string& option, const std::string& value) {
    std::vector<std::string> argv_s = {"aws"};
    argv_s.insert(argv_s.end(), args.begin(), args.end());
    std::vector<char*> argv;
    argv.reserve(argv_s.size() + 1);
    for (std::string& a : argv_s) argv.push_back(a.data());
    argv.push_back(nullptr);

    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&actions, out, 1);
    posix_spawn_file_actions_adddup2(&actions, out, 2);
    pid_t pid = 0;
    int rc = posix_spawnp(&pid, "aws", &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (rc == ENOENT) throw Error(exit_usage, aws_cli_missing(option, value));
    if (rc != 0) throw Error(exit_internal, std::string("cannot start the AWS CLI: ") + std::strerror(rc));
    return pid;
}

int wait_for(pid_t pid) {
    int status = 0;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) throw Error(exit_internal, std::string("waiting for the AWS CLI: ") + std::strerror(errno));
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// The end of what the child printed: the CLI puts the error (or the answer) last.
std::string tail_of(int fd) {
    off_t size = lseek(fd, 0, SEEK_END);
    off_t from = size > 2000 ? size - 2000 : 0;
    std::string output(static_cast<std::size_t>(size - from), '\0');
    ssize_t got = size > from ? pread(fd, output.data(), output.size(), from) : 0;
    output.resize(got > 0 ? static_cast<std::size_t>(got) : 0);
    while (!output.empty() && (output.back() == '\n' || output.back() == '\r' || output.back() == ' '))
        output.pop_back();
    return output;
}

}  // namespace

bool aws_on_path() {
    const char* path = std::getenv("PATH");
    std::string dirs = path ? path : "/usr/local/bin:/usr/bin:/bin";
    std::size_t from = 0;
    while (true) {
        std::size_t colon = dirs.find(':', from);
        std::string dir = dirs.substr(from, colon == std::string::npos ? std::string::npos : colon - from);
        fs::path candidate = fs::path(dir.empty() ? "." : dir) / "aws";
        std::error_code ec;
        if (fs::is_regular_file(candidate, ec) && access(candidate.c_str(), X_OK) == 0) return true;
        if (colon == std::string::npos) return false;
        from = colon + 1;
    }
}

std::string aws_cli_missing(const std::string& option, const std::string& value) {
    return option + " " + value + " needs the AWS CLI (no `aws` on PATH; apt-get install awscli)";
}

int run_aws(const std::vector<std::string>& args, const std::string& option, const std::string& value,
            std::string& output) {
    Fd out = anonymous_temp_file();
    int status = wait_for(spawn_aws(args, out.get(), option, value));
    output = tail_of(out.get());
    return status;
}

std::string utc_stamp() {
    std::time_t now = std::time(nullptr);
    std::tm tm{};
    gmtime_r(&now, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y%m%dT%H%M%SZ", &tm);
    return buf;
}

}  // namespace epc
