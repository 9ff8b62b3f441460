#include "epc/extract/download.hpp"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <random>
#include <sstream>
#include <thread>
#include <vector>

#include <curl/curl.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "epc/extract/sha256.hpp"

namespace fs = std::filesystem;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace epc {

namespace {

struct CurlCleanup {
    void operator()(CURL* curl) const { curl_easy_cleanup(curl); }
};
using CurlHandle = std::unique_ptr<CURL, CurlCleanup>;

struct CurlListFree {
    void operator()(curl_slist* list) const { curl_slist_free_all(list); }
};
using CurlList = std::unique_ptr<curl_slist, CurlListFree>;

struct FileCloser {
    void operator()(std::FILE* f) const { std::fclose(f); }
};
using FileHandle = std::unique_ptr<std::FILE, FileCloser>;

void init_curl() {
    static std::once_flag once;
    std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

std::string lower(std::string s) {
    for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
}

std::string trim(std::string_view s) {
    std::size_t b = s.find_first_not_of(" \t\r\n");
    if (b == std::string_view::npos) return "";
    std::size_t e = s.find_last_not_of(" \t\r\n");
    return std::string(s.substr(b, e - b + 1));
}

std::string human_bytes(double bytes) {
    const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int u = 0;
    while (bytes >= 1024 && u < 4) {
        bytes /= 1024;
        ++u;
    }
    char buf[32];
    std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", bytes, units[u]);
    return buf;
}

// Replaces every known secret in a text with "***". Server answers and libcurl messages go
// through it before they reach a log line or an error, in case they echo a secret back.
class Redactor {
public:
    void add(const std::string& secret) {
        // Very short values (an expiry of "30") are not secrets and would mangle messages.
        if (secret.size() >= 6) secrets_.push_back(secret);
    }
    // A presigned URL's query holds its signature and credential scope: hide all of it, and each
    // long value on its own in case a server quotes one.
    void add_query_of(const std::string& url) {
        std::size_t q = url.find('?');
        if (q == std::string::npos) return;
        std::string query = url.substr(q + 1);
        add(query);
        std::size_t start = 0;
        while (start <= query.size()) {
            std::size_t amp = query.find('&', start);
            std::string pair = query.substr(start, amp == std::string::npos ? std::string::npos : amp - start);
            std::size_t eq = pair.find('=');
            if (eq != std::string::npos) add(pair.substr(eq + 1));
            if (amp == std::string::npos) break;
            start = amp + 1;
        }
    }
    std::string operator()(std::string text) const {
        for (const auto& s : secrets_)
            for (std::size_t at; (at = text.find(s)) != std::string::npos;) text.replace(at, s.size(), "***");
        return text;
    }

private:
    std::vector<std::string> secrets_;
};

// A short, single-line excerpt of a server's error answer for messages.
std::string excerpt(const std::string& body) {
    std::string text = body;
    try {
        json j = json::parse(body);
        if (j.is_object())
            for (const char* key : {"error", "message", "detail"})
                if (j.contains(key) && j[key].is_string()) text = j[key].get<std::string>();
    } catch (const json::exception&) {
    }
    for (char& c : text)
        if (c == '\n' || c == '\r' || c == '\t') c = ' ';
    text = trim(text);
    if (text.size() > 200) text = text.substr(0, 200) + "...";
    return text;
}

// ---------------------------------------------------------------------------------------------
// One HTTP exchange.

struct Response {
    long status = 0;
    CURLcode code = CURLE_OK;
    std::string error;          // libcurl's message when code != CURLE_OK
    std::string body;           // the body when it did not go to a sink (capped)
    std::string location;       // redirect target, resolved against the request URL
    std::string retry_after;
    std::string content_range;
    std::optional<std::uint64_t> content_length;
    std::uint64_t received = 0;  // body bytes the sink accepted
    std::string sink_problem;    // why the sink stopped the transfer
    std::string cookies;         // with keep_cookies: "name=value; ..." of the cookies set
};

// Receives a 2xx body.
class BodySink {
public:
    virtual ~BodySink() = default;
    // Called once, when the body starts; returning false aborts the transfer (set sink_problem).
    virtual bool begin(Response& response) = 0;
    virtual bool write(const char* data, std::size_t size, Response& response) = 0;
};

struct Request {
    std::string url;
    std::vector<std::string> headers;
    const Credentials* basic = nullptr;       // HTTP Basic from email:api_key
    std::optional<std::uint64_t> range_from;  // Range: bytes=N-
    BodySink* sink = nullptr;
    bool keep_cookies = false;                // collect the cookies the answer sets (login)
};

constexpr std::size_t kBodyCap = 1 << 20;  // listings and error pages are far smaller

struct TransferState {
    CURL* curl = nullptr;
    Response* response = nullptr;
    BodySink* sink = nullptr;
    bool started = false;
    bool to_sink = false;
};

std::size_t on_header(char* data, std::size_t size, std::size_t count, void* user) {
    auto* state = static_cast<TransferState*>(user);
    std::string_view line(data, size * count);
    Response& r = *state->response;
    if (line.rfind("HTTP/", 0) == 0) {  // a new response (after a 100 Continue): forget the last
        r.retry_after.clear();
        r.content_range.clear();
        r.content_length.reset();
    } else if (std::size_t colon = line.find(':'); colon != std::string_view::npos) {
        std::string name = lower(std::string(line.substr(0, colon)));
        std::string value = trim(line.substr(colon + 1));
        if (name == "retry-after") r.retry_after = value;
        else if (name == "content-range") r.content_range = value;
        else if (name == "content-length") {
            char* end = nullptr;
            unsigned long long n = std::strtoull(value.c_str(), &end, 10);
            if (end && *end == '\0' && !value.empty()) r.content_length = n;
        }
    }
    return size * count;
}

bool start_body(TransferState& state) {
    state.started = true;
    curl_easy_getinfo(state.curl, CURLINFO_RESPONSE_CODE, &state.response->status);
    long status = state.response->status;
    if (state.sink && status >= 200 && status < 300) {
        if (!state.sink->begin(*state.response)) return false;
        state.to_sink = true;
    }
    return true;
}

std::size_t on_body(char* data, std::size_t size, std::size_t count, void* user) {
    auto* state = static_cast<TransferState*>(user);
    std::size_t n = size * count;
    if (!state->started && !start_body(*state)) return 0;
    Response& r = *state->response;
    if (state->to_sink) {
        if (!state->sink->write(data, n, r)) return 0;
        r.received += n;
        return n;
    }
    if (r.body.size() < kBodyCap) r.body.append(data, std::min(n, kBodyCap - r.body.size()));
    return n;
}

// ---------------------------------------------------------------------------------------------
// The .part file and its SHA-256, kept in step.

class PartFile {
public:
    explicit PartFile(std::string path) : path_(std::move(path)) {}

    // Continues an existing file: hashes what it holds.
    void resume() {
        size_ = sha256_update_from_file(hasher_, path_);
        open("ab");
    }
    void restart() {
        hasher_.reset();
        size_ = 0;
        open("wb");
    }
    bool write(const char* data, std::size_t n) {
        if (std::fwrite(data, 1, n, file_.get()) != n) {
            error_ = std::strerror(errno);
            return false;
        }
        hasher_.update(data, n);
        size_ += n;
        return true;
    }
    void flush() {
        if (std::fflush(file_.get()) != 0) throw Error(exit_internal, "cannot write " + path_ + ": " + std::strerror(errno));
    }
    void close() {
        flush();
        file_.reset();
    }
    std::uint64_t size() const { return size_; }
    const std::string& path() const { return path_; }
    const std::string& error() const { return error_; }
    std::string digest() { return hasher_.hex(); }

private:
    void open(const char* mode) {
        file_.reset(std::fopen(path_.c_str(), mode));
        if (!file_) throw Error(exit_internal, "cannot write " + path_ + ": " + std::strerror(errno));
        std::setvbuf(file_.get(), nullptr, _IOFBF, 1 << 20);
    }

    std::string path_;
    FileHandle file_;
    Sha256 hasher_;
    std::uint64_t size_ = 0;
    std::string error_;
};

// "bytes 100-199/1000" → first byte and total (total 0 when "*").
bool parse_content_range(const std::string& value, std::uint64_t& first, std::uint64_t& total) {
    unsigned long long f = 0, l = 0;
    char rest[32] = {0};
    if (std::sscanf(value.c_str(), "bytes %llu-%llu/%31s", &f, &l, rest) != 3) return false;
    first = f;
    total = std::strcmp(rest, "*") == 0 ? 0 : std::strtoull(rest, nullptr, 10);
    return true;
}

// Where the archive's bytes go during one attempt: checks the answer fits what is on disk, then
// appends to the part file and logs progress.
class ArchiveSink : public BodySink {
public:
    ArchiveSink(PartFile& part, std::uint64_t expected, double interval_s, bool bar)
        : part_(part), expected_(expected), interval_(interval_s), bar_(bar) {}
    ~ArchiveSink() override {
        if (!bar_ || !started_) return;
        log_progress(Clock::now());  // the final state, however short the transfer was
        std::fputc('\n', stderr);   // and leave it on its own line
    }

    bool begin(Response& r) override {
        std::uint64_t total = 0;
        if (r.status == 206) {
            std::uint64_t first = 0;
            if (!parse_content_range(r.content_range, first, total) || first != part_.size()) {
                r.sink_problem = "a partial answer for the wrong range ('" + r.content_range + "' after " +
                                 std::to_string(part_.size()) + " bytes)";
                restart_ = true;
                return false;
            }
        } else {
            // A 200 is the whole file: the server ignored or was not sent a Range.
            if (part_.size() > 0) {
                spdlog::info("download: the server sent the whole file instead of the rest; starting again from 0");
                part_.restart();
            }
            if (r.content_length) total = *r.content_length;
        }
        if (expected_ == 0) expected_ = total;  // the listing did not give a size: trust the transfer
        if (total != 0 && expected_ != 0 && total != expected_) {
            r.sink_problem = "the file is " + std::to_string(total) + " bytes but the service advertised " +
                             std::to_string(expected_);
            mismatch_ = true;
            return false;
        }
        start_ = last_log_ = Clock::now();
        start_size_ = part_.size();
        started_ = true;
        return true;
    }

    bool write(const char* data, std::size_t n, Response& r) override {
        if (expected_ != 0 && part_.size() + n > expected_) {
            r.sink_problem = "more bytes than the " + std::to_string(expected_) + " the service advertised";
            mismatch_ = true;
            return false;
        }
        if (!part_.write(data, n)) {
            r.sink_problem = "cannot write " + part_.path() + ": " + part_.error();
            disk_error_ = true;
            return false;
        }
        auto now = Clock::now();
        if (std::chrono::duration<double>(now - last_log_).count() >= interval_) {
            last_log_ = now;
            log_progress(now);
        }
        return true;
    }

    std::uint64_t expected() const { return expected_; }
    bool mismatch() const { return mismatch_; }
    bool restart() const { return restart_; }
    bool disk_error() const { return disk_error_; }

private:
    void log_progress(Clock::time_point now) {
        double seconds = std::chrono::duration<double>(now - start_).count();
        double rate = seconds > 0 ? double(part_.size() - start_size_) / seconds : 0;
        if (expected_ == 0) {
            spdlog::info("download: {} ({}/s)", human_bytes(double(part_.size())), human_bytes(rate));
            return;
        }
        double pct = 100.0 * double(part_.size()) / double(expected_);
        std::string eta = rate > 0 ? std::to_string(std::llround(double(expected_ - part_.size()) / rate)) + " s" : "?";
        if (bar_) {
            constexpr int kWidth = 30;
            int filled = static_cast<int>(pct / 100.0 * kWidth);
            std::fprintf(stderr, "\rdownload [%-*s] %5.1f%%  %s of %s  %s/s  ETA %s   ", kWidth,
                         std::string(static_cast<std::size_t>(std::clamp(filled, 0, kWidth)), '#').c_str(), pct,
                         human_bytes(double(part_.size())).c_str(), human_bytes(double(expected_)).c_str(),
                         human_bytes(rate).c_str(), eta.c_str());
            std::fflush(stderr);
            return;
        }
        spdlog::info("download: {} of {} ({:.1f}%), {}/s, ETA {}", human_bytes(double(part_.size())),
                     human_bytes(double(expected_)), pct, human_bytes(rate), eta);
    }

    PartFile& part_;
    std::uint64_t expected_;
    double interval_;
    bool bar_;
    bool started_ = false;
    Clock::time_point start_{}, last_log_{};
    std::uint64_t start_size_ = 0;
    bool mismatch_ = false, restart_ = false, disk_error_ = false;
};

// ---------------------------------------------------------------------------------------------

// What to do after an attempt that did not succeed.
struct Retry {
    explicit Retry(std::string why, std::optional<double> after = std::nullopt)
        : reason(std::move(why)), retry_after(after) {}
    std::string reason;                  // for the log and the final error; already redacted
    std::optional<double> retry_after;   // the server said how long to wait
};

bool transient_curl_error(CURLcode code) {
    switch (code) {
        case CURLE_COULDNT_RESOLVE_HOST:  // DNS hiccups are common in containers
        case CURLE_COULDNT_RESOLVE_PROXY:
        case CURLE_COULDNT_CONNECT:
        case CURLE_OPERATION_TIMEDOUT:  // also the low-speed limit
        case CURLE_PARTIAL_FILE:        // connection closed before Content-Length bytes
        case CURLE_RECV_ERROR:          // connection reset
        case CURLE_SEND_ERROR:
        case CURLE_GOT_NOTHING:
        case CURLE_SSL_CONNECT_ERROR:
        case CURLE_HTTP2:
        case CURLE_HTTP2_STREAM:
            return true;
        default:
            return false;
    }
}

class Downloader {
public:
    explicit Downloader(const DownloadOptions& options) : o_(options) {
        init_curl();
        base_ = o_.base_url.empty() ? std::string(default_base_url(o_.source)) : o_.base_url;
        while (!base_.empty() && base_.back() == '/') base_.pop_back();
        redact_.add(o_.creds.token);
        redact_.add(o_.creds.api_key);
        redact_.add(o_.creds.login_token);
        std::string type(cert_type_name(o_.type));
        if (o_.source == Source::current) {
            file_name_ = type + "-csv.zip";
            file_url_ = base_ + "/api/files/" + type + "/csv";
            info_url_ = file_url_ + "/info";
        } else {
            file_name_ = "all-" + type + "-certificates.zip";
            file_url_ = base_ + "/api/v1/files/" + file_name_;
            info_url_ = base_ + "/api/v1/files";
        }
        rng_.seed(std::random_device{}());
    }

    ReleaseInfo info() {
        check_credentials();
        Response r = with_retries("asking for the release's size", [&](int) -> std::optional<Response> {
            Request req = service_request(info_url_);
            req.headers.push_back("Accept: application/json");
            Response r = perform(req);
            if (auto retry = judge(r, /*service=*/true, info_url_)) throw *retry;
            return r;
        });
        return parse_info(r.body);
    }

    DownloadResult download();

private:
    Request service_request(const std::string& url) {
        Request req;
        req.url = url;
        if (o_.source == Source::current) req.headers.push_back("Authorization: Bearer " + o_.creds.token);
        else if (!o_.creds.api_key.empty()) req.basic = &o_.creds;
        else req.headers.push_back("Cookie: " + session());
        // No Accept header on file requests: the legacy API chooses its format by Accept.
        return req;
    }

    void check_credentials() const {
        if (o_.source == Source::current && o_.creds.token.empty())
            throw Error(exit_usage, "the current EPC service needs a token: set EPC_TOKEN (copy it from your account page)");
        if (o_.source == Source::legacy && (o_.creds.email.empty() || (o_.creds.api_key.empty() && o_.creds.login_token.empty())))
            throw Error(exit_usage, "the legacy EPC service needs EPC_API_EMAIL and EPC_API_KEY (or, for older "
                                    "accounts, EPC_API_EMAIL and EPC_LOGIN_TOKEN)");
    }

    // The older legacy sign-in: GET /login-with-token?token=..&email=.. answers with a session
    // cookie, which then goes (to the service only, never to S3) with every request. Logged in once.
    const std::string& session() {
        if (!session_.empty()) return session_;
        const std::string url = base_ + "/login-with-token?token=" + url_escape(o_.creds.login_token) +
                                "&email=" + url_escape(o_.creds.email);
        Response r = with_retries("signing in with the login token", [&](int) -> std::optional<Response> {
            Request req;
            req.url = url;
            req.keep_cookies = true;
            Response r = perform(req);
            // The link answers with a redirect to the site once the cookie is set: that is success.
            if (r.status >= 300 && r.status < 400 && r.code == CURLE_OK) return r;
            if (auto retry = judge(r, /*service=*/true, base_ + "/login-with-token")) throw *retry;
            return r;
        });
        if (r.cookies.empty())
            throw Error(exit_credentials, "the legacy EPC service set no session for the login token "
                                          "(EPC_API_EMAIL/EPC_LOGIN_TOKEN): it was refused or has expired");
        session_ = r.cookies;
        redact_.add(session_);
        return session_;
    }

    static std::string url_escape(const std::string& s) {
        std::string out;
        for (unsigned char c : s) {
            if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
                out += static_cast<char>(c);
            } else {
                char buf[4];
                std::snprintf(buf, sizeof buf, "%%%02X", c);
                out += buf;
            }
        }
        return out;
    }

    std::string service_name() const { return std::string(source_name(o_.source)) + " EPC service"; }

    Response perform(const Request& req) {
        Response r;
        CurlHandle curl(curl_easy_init());
        if (!curl) throw Error(exit_internal, "cannot initialise libcurl");
        CurlList headers;
        for (const auto& h : req.headers) {
            curl_slist* grown = curl_slist_append(headers.get(), h.c_str());
            if (!grown) throw Error(exit_internal, "out of memory");
            headers.release();
            headers.reset(grown);
        }
        TransferState state;
        state.curl = curl.get();
        state.response = &r;
        state.sink = req.sink;
        char error[CURL_ERROR_SIZE] = {0};
        static const std::string agent = std::string("epc-import/") + EPC_VERSION;
        CURL* c = curl.get();
        curl_easy_setopt(c, CURLOPT_URL, req.url.c_str());
        curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
        // Redirects are followed by hand: the service's Authorization must never reach S3.
        curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
        curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(c, CURLOPT_USERAGENT, agent.c_str());
        curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, o_.connect_timeout_s);
        curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, o_.low_speed_bytes);
        curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, o_.low_speed_time_s);
        curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
        curl_easy_setopt(c, CURLOPT_ERRORBUFFER, error);
        curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(c, CURLOPT_HEADERDATA, &state);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, &state);
        if (headers) curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers.get());
        if (req.basic) {
            curl_easy_setopt(c, CURLOPT_HTTPAUTH, CURLAUTH_BASIC);
            curl_easy_setopt(c, CURLOPT_USERNAME, req.basic->email.c_str());
            curl_easy_setopt(c, CURLOPT_PASSWORD, req.basic->api_key.c_str());
        }
        if (req.keep_cookies) curl_easy_setopt(c, CURLOPT_COOKIEFILE, "");  // in-memory cookie engine
        std::string range;
        if (req.range_from) {
            range = std::to_string(*req.range_from) + "-";
            curl_easy_setopt(c, CURLOPT_RANGE, range.c_str());
        }
        r.code = curl_easy_perform(c);
        if (r.status == 0) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
        if (r.code == CURLE_OK && !state.started && !start_body(state)) r.code = CURLE_WRITE_ERROR;  // empty body
        if (r.code != CURLE_OK) r.error = redact_(error[0] ? error : curl_easy_strerror(r.code));
        char* location = nullptr;
        if (curl_easy_getinfo(c, CURLINFO_REDIRECT_URL, &location) == CURLE_OK && location) r.location = location;
        if (req.keep_cookies) {
            // Netscape cookie lines: domain, subdomains, path, secure, expiry, name, value.
            curl_slist* cookies = nullptr;
            if (curl_easy_getinfo(c, CURLINFO_COOKIELIST, &cookies) == CURLE_OK) {
                for (curl_slist* line = cookies; line; line = line->next) {
                    std::vector<std::string> fields;
                    std::string item;
                    std::istringstream in(line->data);
                    while (std::getline(in, item, '\t')) fields.push_back(item);
                    if (fields.size() < 7) continue;
                    if (!r.cookies.empty()) r.cookies += "; ";
                    r.cookies += fields[5] + "=" + fields[6];
                }
                curl_slist_free_all(cookies);
            }
        }
        return r;
    }

    // nullopt: the answer is usable (2xx or a redirect). A Retry: try again. Throws when retrying
    // cannot help.
    std::optional<Retry> judge(const Response& r, bool service, const std::string& url) {
        std::string where = detail::redact_url(url);
        if (r.code != CURLE_OK) {
            if (!r.sink_problem.empty()) return Retry{redact_(r.sink_problem)};
            if (transient_curl_error(r.code)) return Retry{"network error from " + where + ": " + r.error};
            throw Error(exit_internal, "cannot fetch " + where + ": " + r.error);
        }
        long s = r.status;
        if ((s >= 200 && s < 300) || (s >= 301 && s <= 308 && s != 304 && !r.location.empty())) return std::nullopt;
        std::string what = "HTTP " + std::to_string(s) + " from " + where;
        std::string said = excerpt(r.body);
        if (!said.empty()) what += " (" + redact_(said) + ")";
        if (s == 429 || s == 503) {
            Retry retry{what};
            if (!r.retry_after.empty()) retry.retry_after = detail::parse_retry_after(r.retry_after);
            return retry;
        }
        if (s >= 500) return Retry{what};
        if (service && (s == 401 || s == 403)) {
            if (o_.source == Source::current)
                throw Error(exit_credentials, "the current EPC service refused the token (" + what +
                                                  "): check EPC_TOKEN (the token from your account page)");
            throw Error(exit_credentials, "the legacy EPC service refused the credentials (" + what +
                                              "): check EPC_API_EMAIL and EPC_API_KEY (or EPC_LOGIN_TOKEN)");
        }
        // A presigned URL that expired (or was already used) is refused with 403: ask for another.
        if (!service && s == 403) return Retry{"the download URL was refused, probably expired (" + what + ")"};
        if (service && s == 404)
            throw Error(exit_usage, "no such file: the " + service_name() + " has no " +
                                        std::string(cert_type_name(o_.type)) + " file (" + what +
                                        "); check --certtype, --source and --base-url");
        throw Error(exit_internal, "unexpected answer: " + what);
    }

    // Runs `attempt` until it returns a value; each Retry it throws waits (Retry-After or backoff)
    // and counts against max_attempts. An attempt that sets progressed_ (the .part file grew past
    // its high-water mark) resets the count: a long download may be cut many times and still finish.
    template <class F>
    auto with_retries(const std::string& what, F attempt) -> typename std::invoke_result_t<F, int>::value_type {
        int failures = 0;
        for (int n = 1;; ++n) {
            attempts_ = n;
            try {
                progressed_ = false;
                if (auto value = attempt(n)) return std::move(*value);
            } catch (const Retry& retry) {
                if (progressed_) failures = 0;
                ++failures;
                if (failures >= o_.max_attempts)
                    throw Error(exit_transient, "gave up " + what + " after " + std::to_string(failures) +
                                                    (failures == 1 ? " attempt" : " attempts") + ": " + retry.reason);
                double wait;
                if (retry.retry_after) {
                    wait = std::min(*retry.retry_after, o_.max_retry_after_s);
                } else {
                    double bound = std::min(o_.max_backoff_s, o_.initial_backoff_s * std::pow(2.0, failures - 1));
                    wait = std::uniform_real_distribution<double>(0.0, std::max(bound, 0.0))(rng_);
                }
                spdlog::warn("download: {}; retrying in {:.1f} s (attempt {} of {})", retry.reason, wait, failures + 1,
                             o_.max_attempts);
                std::this_thread::sleep_for(std::chrono::duration<double>(wait));
            }
        }
    }

    ReleaseInfo parse_info(const std::string& body) {
        ReleaseInfo info;
        info.file_name = file_name_;
        json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
        std::string where = detail::redact_url(info_url_);
        if (o_.source == Source::current) {
            const json* data = j.is_object() && j.contains("data") ? &j["data"] : nullptr;
            const json* size = data && data->is_object() && data->contains("fileSize") ? &(*data)["fileSize"] : nullptr;
            if (size && size->is_number_unsigned()) info.size = size->get<std::uint64_t>();
            else if (size && size->is_string()) info.size = std::strtoull(size->get<std::string>().c_str(), nullptr, 10);
            if (info.size == 0)
                throw Error(exit_internal, "unexpected answer from " + where + ": no data.fileSize in '" +
                                               redact_(excerpt(body)) + "'");
            if (data->contains("lastUpdated") && (*data)["lastUpdated"].is_string())
                info.last_updated = (*data)["lastUpdated"].get<std::string>();
            return info;
        }
        if (j.is_discarded())
            throw Error(exit_internal, "unexpected answer from " + where + ": not JSON ('" + redact_(excerpt(body)) + "')");
        if (auto size = detail::legacy_listed_size(j, file_name_)) info.size = *size;
        else
            spdlog::warn("download: {} does not list {}; its size will be taken from the transfer", where, file_name_);
        return info;
    }

    const DownloadOptions& o_;
    std::string base_, file_name_, file_url_, info_url_;
    Redactor redact_;
    std::mt19937_64 rng_;
    int attempts_ = 0;
    bool progressed_ = false;
    std::string session_;  // legacy login-with-token session cookie
};

json read_json_file(const std::string& path) {
    std::ifstream in(path);
    if (!in) return json();
    return json::parse(in, nullptr, false);
}

DownloadResult Downloader::download() {
    DownloadResult result;
    result.info = info();
    std::uint64_t expected = result.info.size;
    result.path = download_path(o_);

    std::error_code ec;
    fs::create_directories(o_.work_dir, ec);
    if (ec) throw Error(exit_usage, "cannot create the work directory " + o_.work_dir + ": " + ec.message());

    // A finished download of this very release (another shard on this host, or a run that failed
    // after downloading) is used as it is: same name, size and date, and its digest on record.
    const std::string done_path = result.path + ".json";
    json release = {{"file", result.info.file_name}, {"size", expected}, {"last_updated", result.info.last_updated}};
    {
        json done = read_json_file(done_path);
        std::error_code done_ec;
        auto done_size = fs::file_size(result.path, done_ec);
        if (!done_ec && expected > 0 && done_size == expected && done.is_object() && done.contains("sha256") &&
            done.value("file", "") == result.info.file_name && done.value("size", std::uint64_t{0}) == expected &&
            done.value("last_updated", "") == result.info.last_updated) {
            result.bytes = done_size;
            result.sha256 = done.value("sha256", "");
            spdlog::info("download: {} already holds this release ({}, sha256 {}); not downloading it again",
                         result.path, human_bytes(double(done_size)), result.sha256);
            return result;
        }
    }
    fs::remove(done_path, ec);  // from here on the file at result.path is not a finished download

    // The .part file may be left by an earlier, interrupted run: continue it only when it belongs
    // to the same release (same advertised size and date), else its bytes would be spliced into
    // another file.
    PartFile part(result.path + ".part");
    std::string meta_path = part.path() + ".json";
    const json meta = release;
    std::error_code size_ec;
    auto on_disk = fs::file_size(part.path(), size_ec);
    if (!size_ec && on_disk > 0 && expected > 0 && on_disk <= expected && read_json_file(meta_path) == meta) {
        part.resume();
        spdlog::info("download: resuming {} at {} of {}", part.path(), human_bytes(double(part.size())),
                     human_bytes(double(expected)));
    } else {
        part.restart();
    }
    {
        std::ofstream out(meta_path, std::ios::trunc);
        out << meta.dump() << '\n';
        if (!out) throw Error(exit_internal, "cannot write " + meta_path);
    }

    spdlog::info("download: {} {} from {} ({})", source_name(o_.source), result.info.file_name,
                 detail::redact_url(base_), expected ? human_bytes(double(expected)) : "size unknown");
    auto started = Clock::now();
    std::uint64_t high_water = part.size();
    bool resumed = false;

    with_retries("downloading " + result.info.file_name, [&](int n) -> std::optional<bool> {
        // Always ask the service for a new URL: a presigned URL expires in ~30 s and is
        // single-use in practice.
        ArchiveSink sink(part, expected, o_.progress_bar ? 0.25 : o_.progress_interval_s, o_.progress_bar);
        std::optional<std::uint64_t> from;
        if (part.size() > 0) from = part.size();
        Request req = service_request(file_url_);
        req.range_from = from;
        req.sink = &sink;  // a mirror may serve the file itself instead of redirecting
        Response r = perform(req);
        std::string url = file_url_;
        bool service = true;
        for (int hops = 0; r.code == CURLE_OK && r.status >= 300 && r.status < 400 && !r.location.empty(); ++hops) {
            if (hops == 3) throw Error(exit_internal, "too many redirects from " + detail::redact_url(file_url_));
            url = r.location;
            service = false;
            redact_.add_query_of(url);
            spdlog::debug("download: attempt {}: fetching {}{}", n, detail::redact_url(url),
                          from ? " from byte " + std::to_string(*from) : std::string());
            Request next;  // no credentials: the signed URL carries its own authorisation
            next.url = url;
            next.range_from = from;
            next.sink = &sink;
            r = perform(next);
        }
        part.flush();
        if (from && r.status == 206 && !sink.restart()) resumed = true;
        if (part.size() > high_water) {
            high_water = part.size();
            progressed_ = true;
        }
        if (sink.disk_error()) throw Error(exit_internal, r.sink_problem);
        if (sink.mismatch() || sink.restart()) {
            part.restart();
            resumed = false;
            progressed_ = false;
            throw Retry{redact_(r.sink_problem)};
        }
        // 416 to a resume: the part file already holds everything (a run that stopped before the
        // rename), or it is not this file after all.
        if (r.code == CURLE_OK && r.status == 416 && from) {
            std::size_t slash = r.content_range.find('/');  // "bytes */TOTAL"
            std::uint64_t total = slash == std::string::npos ? 0 : std::strtoull(r.content_range.c_str() + slash + 1, nullptr, 10);
            if (expected != 0 && *from == expected && (total == 0 || total == expected)) {
                resumed = true;
                return true;
            }
            part.restart();
            resumed = false;
            throw Retry{"HTTP 416 from " + detail::redact_url(url) + " when resuming at byte " + std::to_string(*from)};
        }
        if (auto retry = judge(r, service, url)) throw *retry;
        if (r.status < 200 || r.status >= 300)
            throw Error(exit_internal, "unexpected HTTP " + std::to_string(r.status) + " from " + detail::redact_url(url));
        if (sink.expected() != 0 && part.size() != sink.expected()) {
            std::string why = "the download ended at " + std::to_string(part.size()) + " bytes but the service advertised " +
                              std::to_string(sink.expected());
            part.restart();
            resumed = false;
            progressed_ = false;
            throw Retry{why};
        }
        if (sink.expected() == 0) expected = part.size();
        else expected = sink.expected();
        return true;
    });

    result.attempts = attempts_;
    result.resumed = resumed;
    result.bytes = part.size();
    part.close();
    result.sha256 = part.digest();
    fs::rename(part.path(), result.path, ec);
    if (ec) throw Error(exit_internal, "cannot rename " + part.path() + " to " + result.path + ": " + ec.message());
    fs::remove(meta_path, ec);
    {
        std::ofstream out(result.path + ".sha256", std::ios::trunc);
        out << result.sha256 << "  " << fs::path(result.path).filename().string() << '\n';
        if (!out) throw Error(exit_internal, "cannot write " + result.path + ".sha256");
        release["sha256"] = result.sha256;
        std::ofstream done(done_path, std::ios::trunc);
        done << release.dump() << '\n';
        if (!done) throw Error(exit_internal, "cannot write " + done_path);
    }
    double seconds = std::chrono::duration<double>(Clock::now() - started).count();
    spdlog::info("download: {} complete, {} in {:.1f} s ({}/s), {} attempt{}, sha256 {}", result.path,
                 human_bytes(double(result.bytes)), seconds, human_bytes(seconds > 0 ? double(result.bytes) / seconds : 0),
                 result.attempts, result.attempts == 1 ? "" : "s", result.sha256);
    return result;
}

}  // namespace

// ---------------------------------------------------------------------------------------------

std::string_view source_name(Source source) {
    return source == Source::current ? "current" : "legacy";
}

std::optional<Source> parse_source(std::string_view name) {
    if (name == "current") return Source::current;
    if (name == "legacy") return Source::legacy;
    return std::nullopt;
}

std::string_view default_base_url(Source source) {
    return source == Source::current ? "https://api.get-energy-performance-data.communities.gov.uk"
                                     : "https://epc.opendatacommunities.org";
}

std::string download_path(const DownloadOptions& options) {
    return (fs::path(options.work_dir) /
            (std::string(cert_type_name(options.type)) + "-" + std::string(source_name(options.source)) + ".zip"))
        .string();
}

ReleaseInfo fetch_release_info(const DownloadOptions& options) {
    return Downloader(options).info();
}

DownloadResult download_release(const DownloadOptions& options) {
    return Downloader(options).download();
}

namespace detail {

std::optional<std::uint64_t> legacy_listed_size(const json& listing, const std::string& name) {
    std::function<std::optional<std::uint64_t>(const json&, bool)> size_of =
        [&](const json& v, bool nested) -> std::optional<std::uint64_t> {
        if (v.is_number_unsigned()) return v.get<std::uint64_t>();
        if (v.is_number_integer() && v.get<std::int64_t>() >= 0) return std::uint64_t(v.get<std::int64_t>());
        if (v.is_string()) {
            const std::string& s = v.get_ref<const std::string&>();
            char* end = nullptr;
            unsigned long long n = std::strtoull(s.c_str(), &end, 10);
            if (!s.empty() && end && *end == '\0') return n;
        }
        if (v.is_object() && !nested)
            for (const char* key : {"size", "fileSize", "file_size", "bytes"})
                if (v.contains(key)) return size_of(v[key], true);
        return std::nullopt;
    };
    std::function<std::optional<std::uint64_t>(const json&, int)> find = [&](const json& j, int depth)
        -> std::optional<std::uint64_t> {
        if (j.is_object()) {
            if (j.contains(name)) return size_of(j[name], false);
            if (depth == 0) return std::nullopt;
            for (const auto& item : j.items())
                if (auto s = find(item.value(), depth - 1)) return s;
        } else if (j.is_array() && depth > 0) {
            // [{"name": "...", "size": N}, ...]
            for (const auto& item : j) {
                if (item.is_object())
                    for (const char* key : {"name", "file", "fileName", "filename"})
                        if (item.contains(key) && item[key] == name) return size_of(item, false);
                if (auto s = find(item, depth - 1)) return s;
            }
        }
        return std::nullopt;
    };
    return find(listing, 2);
}

std::optional<double> parse_retry_after(const std::string& value) {
    std::string v = trim(value);
    if (v.empty()) return std::nullopt;
    if (std::all_of(v.begin(), v.end(), [](unsigned char c) { return std::isdigit(c); }))
        return std::strtod(v.c_str(), nullptr);
    std::time_t when = curl_getdate(v.c_str(), nullptr);
    if (when == -1) return std::nullopt;
    return std::max(0.0, std::difftime(when, std::time(nullptr)));
}

std::string redact_url(const std::string& url) {
    std::string u = url.substr(0, url.find_first_of("?#"));
    std::size_t scheme = u.find("://");
    std::size_t host = scheme == std::string::npos ? 0 : scheme + 3;
    std::size_t slash = u.find('/', host);
    std::size_t at = u.rfind('@', slash == std::string::npos ? u.size() : slash);
    if (at != std::string::npos && at >= host) u.erase(host, at + 1 - host);
    return u;
}

}  // namespace detail

}  // namespace epc
