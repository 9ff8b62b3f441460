// A stand-in for the publisher's two services and the S3 host their downloads redirect to, for
// download tests: two cpp-httplib servers on 127.0.0.1 (ports chosen by the system), each in its
// own thread. It serves one file (any bytes) for one certificate type, checks credentials, hands
// out single-use presigned-style URLs that expire, logs every request, and misbehaves on request.
#pragma once

#include <httplib.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

namespace epc::test {

// One request as a host received it.
struct SeenRequest {
    std::string host;  // "service" or "s3"
    std::string method;
    std::string path;
    std::map<std::string, std::string> params;
    httplib::Headers headers;
    std::chrono::steady_clock::time_point at;

    bool has(const std::string& header) const { return headers.count(header) > 0; }
    std::string header(const std::string& name) const {
        auto it = headers.find(name);
        return it == headers.end() ? "" : it->second;
    }
};

inline std::string base64(const std::string& in) {
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    std::string out;
    std::size_t i = 0;
    for (; i + 2 < in.size(); i += 3) {
        unsigned v = (unsigned char)in[i] << 16 | (unsigned char)in[i + 1] << 8 | (unsigned char)in[i + 2];
        for (int shift : {18, 12, 6, 0}) out += alphabet[(v >> shift) & 63];
    }
    if (i + 1 == in.size()) {
        unsigned v = (unsigned char)in[i] << 16;
        out += alphabet[(v >> 18) & 63];
        out += alphabet[(v >> 12) & 63];
        out += "==";
    } else if (i + 2 == in.size()) {
        unsigned v = (unsigned char)in[i] << 16 | (unsigned char)in[i + 1] << 8;
        out += alphabet[(v >> 18) & 63];
        out += alphabet[(v >> 12) & 63];
        out += alphabet[(v >> 6) & 63];
        out += '=';
    }
    return out;
}

// Misbehaviour, consumed as it happens (counts go down).
struct Faults {
    int service_500 = 0;  // the next N file requests to the service answer 500
    int service_429 = 0;  // ... answer 429 with Retry-After: retry_after
    int service_503 = 0;  // ... answer 503 with Retry-After: retry_after
    std::string retry_after = "1";
    int s3_500 = 0;             // the next N S3 requests answer 500
    int cuts = 0;               // the next N S3 transfers close the connection mid-body ...
    std::size_t cut_after = 0;  // ... after this many body bytes (0: half of that answer)
    int expired = 0;            // the next N presigned URLs are issued already expired
    long long size_delta = 0;   // added to the size the service advertises
    bool ignore_range = false;  // S3 answers a Range request with 200 and the whole file
    bool missing = false;       // the service answers 404 for the file and its info
    int stall_ms = 0;           // with a cut: sleep this long before closing the connection
};

// Where a stand-in listens. Tests: loopback, ports chosen by the system. The compose trial
// (another container connects, and follows the redirect to the S3 host): all addresses, fixed
// ports, and the service's name in the URLs it hands out.
struct Listen {
    std::string bind = "127.0.0.1";
    std::string public_host = "127.0.0.1";
    int port = 0;     // 0: any free port
    int s3_port = 0;  // the EPC service's S3 host
};

class EpcService {
public:
    // Credentials the stand-in accepts; tests look for these in logs and errors.
    const std::string token = "tok-4f1c9a7e2b5d8c3f6a0e9b1d4c7f2a5e8b3d6c9f0a1e4b7d2c5f8a3e6b9d0c1f";
    const std::string email = "importer@example.org";
    const std::string api_key = "key-9d8c7b6a5f4e3d2c1b0a";
    const std::string login_token = "lt-5e6f7a8b9c0d1e2f3a4b5c6d";  // legacy login-with-token link
    const std::string session = "sess-0a1b2c3d4e5f60718293a4b5";    // the cookie that link sets
    std::string last_updated = "2026-11-01T03:04:05Z";              // tests change it to publish a new release
    int expiry_s = 30;                                              // presigned URLs expire after this many seconds
    bool single_use = true;                                         // a presigned URL works once
    std::atomic<int> s3_delay_ms{0};  // every S3 transfer starts this late: makes a download last

    EpcService(std::string body, std::string type = "domestic", Listen listen = Listen())
        : body_(std::move(body)), type_(std::move(type)), public_host_(listen.public_host) {
        routes();
        auto bind = [&](httplib::Server& server, int port) {
            if (port == 0) return server.bind_to_any_port(listen.bind);
            return server.bind_to_port(listen.bind, port) ? port : -1;
        };
        port_ = bind(service_, listen.port);
        s3_port_ = bind(s3_, listen.s3_port);
        if (port_ <= 0 || s3_port_ <= 0)
            throw std::runtime_error("stand-in EPC service: cannot bind to " + listen.bind);
        threads_.emplace_back([this] { service_.listen_after_bind(); });
        threads_.emplace_back([this] { s3_.listen_after_bind(); });
        for (int i = 0; i < 500 && !(service_.is_running() && s3_.is_running()); ++i)
            std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }

    ~EpcService() {
        service_.stop();
        s3_.stop();
        for (auto& t : threads_) t.join();
    }

    EpcService(const EpcService&) = delete;
    EpcService& operator=(const EpcService&) = delete;

    std::string base_url() const { return "http://" + public_host_ + ":" + std::to_string(port_); }
    std::string s3_url() const { return "http://" + public_host_ + ":" + std::to_string(s3_port_); }

    void set_faults(const Faults& faults) {
        std::lock_guard<std::mutex> lock(mutex_);
        faults_ = faults;
    }

    std::vector<SeenRequest> requests(const std::string& host = "") const {
        std::lock_guard<std::mutex> lock(mutex_);
        std::vector<SeenRequest> out;
        for (const auto& r : seen_)
            if (host.empty() || r.host == host) out.push_back(r);
        return out;
    }

    // Signatures of every presigned URL handed out.
    std::vector<std::string> signatures() const {
        std::lock_guard<std::mutex> lock(mutex_);
        std::vector<std::string> out;
        for (const auto& [sig, url] : issued_) out.push_back(sig);
        return out;
    }

private:
    struct Issued {
        long long date = 0;
        bool used = false;
    };

    static long long now_s() {
        return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
            .count();
    }

    void log(const std::string& host, const httplib::Request& req) {
        SeenRequest seen{host, req.method, req.path, {}, req.headers, std::chrono::steady_clock::now()};
        for (const auto& [k, v] : req.params) seen.params[k] = v;
        std::lock_guard<std::mutex> lock(mutex_);
        seen_.push_back(std::move(seen));
    }

    static void json_error(httplib::Response& res, int status, const std::string& message) {
        res.status = status;
        res.set_content(nlohmann::json{{"error", message}}.dump(), "application/json");
    }

    bool current_auth_ok(const httplib::Request& req) const {
        return req.get_header_value("Authorization") == "Bearer " + token;
    }

    bool legacy_auth_ok(const httplib::Request& req) const {
        if (req.get_header_value("Authorization") == "Basic " + base64(email + ":" + api_key)) return true;
        // Or the session cookie of the older login-with-token link.
        return req.get_header_value("Cookie").find("_epc_session=" + session) != std::string::npos;
    }

    std::string file_name(bool legacy) const {
        return legacy ? "all-" + type_ + "-certificates.zip" : type_ + "-csv.zip";
    }

    // The service's answer to a file request: faults, then a 302 to a fresh presigned URL.
    void redirect(httplib::Response& res, bool legacy) {
        std::lock_guard<std::mutex> lock(mutex_);
        if (faults_.service_500 > 0) {
            --faults_.service_500;
            return json_error(res, 500, "Internal Server Error");
        }
        for (int* n : {&faults_.service_429, &faults_.service_503})
            if (*n > 0) {
                --*n;
                res.set_header("Retry-After", faults_.retry_after);
                return json_error(res, n == &faults_.service_429 ? 429 : 503, "Slow down");
            }
        long long date = now_s();
        if (faults_.expired > 0) {
            --faults_.expired;
            date -= expiry_s + 60;
        }
        std::string signature;
        static const char hex[] = "0123456789abcdef";
        for (int i = 0; i < 64; ++i) signature += hex[rng_() % 16];
        issued_[signature] = Issued{date, false};
        res.set_redirect(s3_url() + "/bucket/" + file_name(legacy) +
                             "?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAEXAMPLE%2F20261101" +
                             "&X-Amz-Date=" + std::to_string(date) + "&X-Amz-Expires=" + std::to_string(expiry_s) +
                             "&X-Amz-Signature=" + signature,
                         302);
    }

    void routes() {
        service_.Get(R"(/api/files/([a-z-]+)/csv)", [this](const httplib::Request& req, httplib::Response& res) {
            log("service", req);
            if (!current_auth_ok(req)) return json_error(res, 401, "Unauthorized");
            if (req.matches[1] != type_ || missing()) return json_error(res, 404, "File not found");
            redirect(res, false);
        });
        service_.Get(R"(/api/files/([a-z-]+)/csv/info)", [this](const httplib::Request& req, httplib::Response& res) {
            log("service", req);
            if (!current_auth_ok(req)) return json_error(res, 401, "Unauthorized");
            if (req.matches[1] != type_ || missing()) return json_error(res, 404, "File not found");
            nlohmann::json info = {{"data", {{"fileSize", advertised_size()}, {"lastUpdated", last_updated}}}};
            res.set_content(info.dump(), "application/json");
        });
        service_.Get(R"(/api/v1/files/(.+))", [this](const httplib::Request& req, httplib::Response& res) {
            log("service", req);
            if (!legacy_auth_ok(req)) return json_error(res, 401, "Unauthorized");
            if (req.matches[1] != file_name(true) || missing()) return json_error(res, 404, "Not found");
            redirect(res, true);
        });
        service_.Get("/login-with-token", [this](const httplib::Request& req, httplib::Response& res) {
            log("service", req);
            res.status = 302;
            if (req.get_param_value("token") != login_token || req.get_param_value("email") != email) {
                res.set_header("Location", "/login");  // no session: back to the sign-in page
                return;
            }
            res.set_header("Set-Cookie", "_epc_session=" + session + "; Path=/; HttpOnly");
            res.set_header("Location", "/");
        });
        service_.Get("/api/v1/files", [this](const httplib::Request& req, httplib::Response& res) {
            log("service", req);
            if (!legacy_auth_ok(req)) return json_error(res, 401, "Unauthorized");
            nlohmann::json listing = {{"all-display-certificates.zip", 12345}};
            if (!missing()) listing[file_name(true)] = advertised_size();
            res.set_content(listing.dump(), "application/json");
        });
        s3_.Get(R"(/bucket/(.+))", [this](const httplib::Request& req, httplib::Response& res) { s3_get(req, res); });
    }

    bool missing() {
        std::lock_guard<std::mutex> lock(mutex_);
        return faults_.missing;
    }

    unsigned long long advertised_size() {
        std::lock_guard<std::mutex> lock(mutex_);
        return static_cast<unsigned long long>(static_cast<long long>(body_.size()) + faults_.size_delta);
    }

    static void s3_error(httplib::Response& res, int status, const std::string& code) {
        res.status = status;
        res.set_content("<?xml version=\"1.0\"?><Error><Code>" + code + "</Code></Error>", "application/xml");
    }

    void s3_get(const httplib::Request& req, httplib::Response& res) {
        log("s3", req);
        if (int delay = s3_delay_ms.load(); delay > 0) std::this_thread::sleep_for(std::chrono::milliseconds(delay));
        // Ranges are served by hand below, so that the stand-in can also get them wrong; httplib
        // would otherwise apply the parsed Range to the answer a second time.
        const_cast<httplib::Request&>(req).ranges.clear();
        std::lock_guard<std::mutex> lock(mutex_);
        // Real S3 refuses a request that carries a second authorisation besides the signed query.
        if (req.has_header("Authorization")) return s3_error(res, 400, "InvalidArgument");
        auto it = issued_.find(req.get_param_value("X-Amz-Signature"));
        if (it == issued_.end()) return s3_error(res, 403, "SignatureDoesNotMatch");
        if (now_s() - it->second.date > expiry_s || (single_use && it->second.used))
            return s3_error(res, 403, "AccessDenied");
        it->second.used = true;
        if (faults_.s3_500 > 0) {
            --faults_.s3_500;
            return s3_error(res, 500, "InternalError");
        }
        std::size_t from = 0;
        std::string range = req.get_header_value("Range");
        bool partial = !range.empty() && !faults_.ignore_range;
        if (partial) {
            from = std::stoull(range.substr(range.find('=') + 1));
            if (from >= body_.size()) {
                res.set_header("Content-Range", "bytes */" + std::to_string(body_.size()));
                return s3_error(res, 416, "InvalidRange");
            }
        }
        std::size_t length = body_.size() - from;
        std::size_t cut = 0;  // 0 = no cut
        if (faults_.cuts > 0) {
            --faults_.cuts;
            cut = faults_.cut_after ? faults_.cut_after : length / 2;
        }
        int stall = faults_.stall_ms;
        if (partial) {
            res.status = 206;
            res.set_header("Content-Range", "bytes " + std::to_string(from) + "-" + std::to_string(body_.size() - 1) +
                                                "/" + std::to_string(body_.size()));
        } else {
            res.status = 200;
        }
        res.set_content_provider(
            length, "application/zip",
            [this, from, cut, stall](std::size_t offset, std::size_t remaining, httplib::DataSink& sink) {
                std::size_t n = std::min<std::size_t>(remaining, 16 * 1024);
                if (cut) {
                    if (offset >= cut) {
                        std::this_thread::sleep_for(std::chrono::milliseconds(stall));
                        return false;  // closes the connection before Content-Length bytes
                    }
                    n = std::min(n, cut - offset);
                }
                return sink.write(body_.data() + from + offset, n);
            });
    }

    std::string body_;
    std::string type_;
    std::string public_host_;
    httplib::Server service_, s3_;
    int port_ = 0, s3_port_ = 0;
    std::vector<std::thread> threads_;
    mutable std::mutex mutex_;
    Faults faults_;
    std::vector<SeenRequest> seen_;
    std::map<std::string, Issued> issued_;
    std::mt19937 rng_{std::random_device{}()};
};

// A --credentials-file with the token the stand-in accepts, written to `path`; returns `path`.
inline std::string credentials_file(const EpcService& service, const std::string& path) {
    std::ofstream(path) << "# test credentials\nEPC_TOKEN=" << service.token << "\n";
    return path;
}

}  // namespace epc::test
