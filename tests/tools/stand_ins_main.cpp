// epc-stand-ins: the test stand-ins as a long-running process (on 127.0.0.1 unless --host), for
// scripts (the sample run, the geocode benchmark, the compose trial) that run the real epc-import
// binary against them. --host, --public-host and the --*-port options serve other containers.
//
//   --epc-zip FILE     the current EPC service (epc::test::EpcService: Bearer token check, a 302
//                      to a presigned-style URL on its own S3 host, /info) serving FILE
//   --postcodes-io     a postcodes.io bulk lookup (POST /postcodes, at most 100 per request) that
//                      knows EVERY well-formed postcode: its coordinate is derived from a hash of
//                      the postcode (latitude 50..55, longitude -5..1), so any archive geocodes
//   --latency-ms N     postcodes.io waits this long before answering each request
//
// When every server listens it prints one JSON line on stdout, e.g.
//   {"epc_base_url":"http://127.0.0.1:40123","token":"tok-...","postcodes_io_url":"http://127.0.0.1:40125"}
// (keys only for the servers asked for), then runs until SIGINT or SIGTERM.
#include <httplib.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/socket.h>

#include <atomic>
#include <cctype>
#include <chrono>
#include <cstdint>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>

#include "support/epc_service.hpp"

namespace {

// "sw1a 1aa" -> "SW1A1AA"
std::string compact(const std::string& s) {
    std::string out;
    for (char c : s)
        if (!std::isspace(static_cast<unsigned char>(c)))
            out += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    return out;
}

// The UK shape on a compacted postcode: outward A9, A99, AA9, AA99, A9A or AA9A; inward 9AA.
bool well_formed(const std::string& pc) {
    auto alpha = [](char c) { return c >= 'A' && c <= 'Z'; };
    auto digit = [](char c) { return c >= '0' && c <= '9'; };
    if (pc.size() < 5 || pc.size() > 7) return false;
    const std::size_t n = pc.size();
    if (!digit(pc[n - 3]) || !alpha(pc[n - 2]) || !alpha(pc[n - 1])) return false;
    const std::string out = pc.substr(0, n - 3);
    std::size_t i = 0;
    while (i < out.size() && i < 2 && alpha(out[i])) ++i;
    if (i == 0 || i == out.size() || !digit(out[i])) return false;
    ++i;
    if (i == out.size()) return true;
    if (i + 1 != out.size()) return false;
    return digit(out[i]) || alpha(out[i]);
}

// "SW1A1AA" -> "SW1A 1AA"
std::string spaced(const std::string& pc) { return pc.substr(0, pc.size() - 3) + " " + pc.substr(pc.size() - 3); }

// FNV-1a, 64 bits: a stable coordinate per postcode.
std::uint64_t fnv1a(const std::string& s) {
    std::uint64_t h = 14695981039346656037ull;
    for (unsigned char c : s) {
        h ^= c;
        h *= 1099511628211ull;
    }
    return h;
}

nlohmann::json lookup(const std::string& query) {
    const std::string pc = compact(query);
    if (!well_formed(pc)) return nullptr;
    const std::uint64_t h = fnv1a(pc);
    const double latitude = 50.0 + 5.0 * static_cast<double>(h & 0xffffffffu) / 4294967296.0;
    const double longitude = -5.0 + 6.0 * static_cast<double>(h >> 32) / 4294967296.0;
    return {{"postcode", spaced(pc)},
            {"quality", 1},
            {"country", "England"},
            {"latitude", latitude},
            {"longitude", longitude}};
}

// "; charset=utf-8" as the real postcodes.io sends it; it also keeps cpp-httplib (0.11) from
// compressing the answer: it picks brotli at its highest quality for a plain "application/json"
// when the client accepts br, as libcurl does, and that took more CPU than everything else here,
// making the stand-in the bottleneck of the benchmark.
void reply(httplib::Response& res, int status, const nlohmann::json& body) {
    res.status = status;
    res.set_content(body.dump(), "application/json; charset=utf-8");
}

// postcodes.io, answering everything well-formed. Bulk: POST /postcodes {"postcodes":[...]};
// single: GET /postcodes/{postcode}.
class PostcodesIo {
public:
    PostcodesIo(int latency_ms, int threads, const epc::test::Listen& listen, int port)
        : latency_ms_(latency_ms), public_host_(listen.public_host) {
        server_.new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<std::size_t>(threads)); };
        // Answers go out at once, not after the client's delayed ACK.
        server_.set_socket_options([](socket_t sock) {
            httplib::default_socket_options(sock);
            int yes = 1;
            setsockopt(sock, IPPROTO_TCP, TCP_NODELAY, &yes, sizeof yes);
        });
        server_.Post("/postcodes", [this](const httplib::Request& req, httplib::Response& res) { bulk(req, res); });
        server_.Get(R"(/postcodes/([^/]+))", [this](const httplib::Request& req, httplib::Response& res) {
            wait();
            nlohmann::json r = lookup(req.matches[1]);
            if (r.is_null()) return reply(res, 404, {{"status", 404}, {"error", "Postcode not found"}});
            reply(res, 200, {{"status", 200}, {"result", r}});
        });
        port_ = port == 0 ? server_.bind_to_any_port(listen.bind)
                          : (server_.bind_to_port(listen.bind, port) ? port : -1);
        if (port_ <= 0) throw std::runtime_error("postcodes.io stand-in: cannot bind to " + listen.bind);
        thread_ = std::thread([this] { server_.listen_after_bind(); });
        for (int i = 0; i < 500 && !server_.is_running(); ++i)
            std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }

    ~PostcodesIo() {
        server_.stop();
        thread_.join();
    }

    PostcodesIo(const PostcodesIo&) = delete;
    PostcodesIo& operator=(const PostcodesIo&) = delete;

    std::string base_url() const { return "http://" + public_host_ + ":" + std::to_string(port_); }
    std::uint64_t requests() const { return requests_; }
    std::uint64_t postcodes() const { return postcodes_; }

private:
    void wait() const {
        if (latency_ms_ > 0) std::this_thread::sleep_for(std::chrono::milliseconds(latency_ms_));
    }

    void bulk(const httplib::Request& req, httplib::Response& res) {
        ++requests_;
        wait();
        auto body = nlohmann::json::parse(req.body, nullptr, false);
        if (body.is_discarded() || !body.is_object() || !body.contains("postcodes") || !body["postcodes"].is_array())
            return reply(
                res, 400,
                {{"status", 400},
                 {"error", "Invalid JSON submitted. You need to submit a JSON object with an array of postcodes"}});
        if (body["postcodes"].size() > 100)  // as the real service does
            return reply(
                res, 400,
                {{"status", 400},
                 {"error", "Too many postcodes submitted. Up to 100 postcodes can be bulk requested at a time"}});
        nlohmann::json result = nlohmann::json::array();
        for (const auto& q : body["postcodes"]) {
            std::string pc = q.is_string() ? q.get<std::string>() : "";
            result.push_back({{"query", pc}, {"result", lookup(pc)}});
        }
        postcodes_ += body["postcodes"].size();
        reply(res, 200, {{"status", 200}, {"result", result}});
    }

    int latency_ms_;
    std::string public_host_;
    httplib::Server server_;
    int port_ = 0;
    std::thread thread_;
    std::atomic<std::uint64_t> requests_{0}, postcodes_{0};
};

std::string read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error("cannot read " + path);
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{
        "Runs the EPC service and/or postcodes.io stand-ins (on 127.0.0.1 unless --host) until SIGINT/SIGTERM; prints "
        "their URLs as one JSON line on stdout when they listen."};
    std::string epc_zip, certtype = "domestic";
    bool postcodes_io = false;
    int latency_ms = 0, threads = 32;
    app.add_option("--epc-zip", epc_zip, "serve this file as the current EPC service's download")
        ->check(CLI::ExistingFile);
    app.add_option("--certtype", certtype, "the certificate type the EPC service offers")
        ->check(CLI::IsMember({"domestic", "non-domestic", "display"}));
    app.add_flag("--postcodes-io", postcodes_io, "run the postcodes.io stand-in (knows every well-formed postcode)");
    app.add_option("--latency-ms", latency_ms, "postcodes.io: delay before each answer")->check(CLI::NonNegativeNumber);
    app.add_option("--threads", threads, "postcodes.io: worker threads")->check(CLI::Range(16, 1024));
    epc::test::Listen listen;
    int postcodes_io_port = 0;
    std::string public_host;
    app.add_option("--host", listen.bind, "address every server binds to (0.0.0.0: reachable from other hosts)")
        ->capture_default_str();
    app.add_option("--public-host", public_host,
                   "host name in the URLs handed out (the ready line, the redirect to the S3 host); default: --host, "
                   "or 127.0.0.1 for 0.0.0.0");
    app.add_option("--epc-port", listen.port, "EPC service port (default: any free port)")->check(CLI::Range(0, 65535));
    app.add_option("--s3-port", listen.s3_port, "its S3 host's port (default: any free port)")
        ->check(CLI::Range(0, 65535));
    app.add_option("--postcodes-io-port", postcodes_io_port, "postcodes.io port (default: any free port)")
        ->check(CLI::Range(0, 65535));
    CLI11_PARSE(app, argc, argv);
    listen.public_host = !public_host.empty() ? public_host : listen.bind == "0.0.0.0" ? "127.0.0.1" : listen.bind;
    if (epc_zip.empty() && !postcodes_io) {
        std::cerr << "epc-stand-ins: nothing to run; give --epc-zip FILE and/or --postcodes-io\n";
        return 2;
    }

    // Block the signals before any server thread starts, so that only sigwait() below sees them.
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
    signal(SIGPIPE, SIG_IGN);

    try {
        std::unique_ptr<epc::test::EpcService> epc;
        std::unique_ptr<PostcodesIo> pio;
        nlohmann::json ready = nlohmann::json::object();
        if (!epc_zip.empty()) {
            epc = std::make_unique<epc::test::EpcService>(read_file(epc_zip), certtype, listen);
            ready["epc_base_url"] = epc->base_url();
            ready["token"] = epc->token;
            ready["s3_url"] = epc->s3_url();
        }
        if (postcodes_io) {
            pio = std::make_unique<PostcodesIo>(latency_ms, threads, listen, postcodes_io_port);
            ready["postcodes_io_url"] = pio->base_url();
        }
        std::cout << ready.dump() << std::endl;

        int sig = 0;
        sigwait(&stop_signals, &sig);
        if (pio)
            std::cerr << "epc-stand-ins: postcodes.io answered " << pio->requests() << " requests for "
                      << pio->postcodes() << " postcodes\n";
        if (epc)
            std::cerr << "epc-stand-ins: the EPC service and its S3 host received " << epc->requests().size()
                      << " requests\n";
    } catch (const std::exception& e) {
        std::cerr << "epc-stand-ins: " << e.what() << "\n";
        return 1;
    }
    return 0;
}
