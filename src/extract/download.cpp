#include "epc/extract/download.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <sstream>
#include <thread>
#include <type_traits>
#include <vector>

#include <curl/curl.h>
#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include "epc/common/http.hpp"
#include "epc/extract/download_files.hpp"
#include "epc/extract/download_progress.hpp"

namespace fs = std::filesystem;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace epc {

namespace {

using http::redact_url;

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
    std::size_t b = text.find_first_not_of(' ');
    text = b == std::string::npos ? "" : text.substr(b, text.find_last_not_of(' ') - b + 1);
    if (text.size() > 200) text = text.substr(0, 200) + "...";
    return text;
}

// ---------------------------------------------------------------------------------------------
// One HTTP exchange with the service, or with the host it redirects to.

struct Response {
    long status = 0;
    CURLcode code = CURLE_OK;
    std::string error;     // libcurl's message when code != CURLE_OK
    std::string body;      // the body when it did not go to a sink (capped)
    std::string location;  // redirect target, resolved against the request URL
    http::ResponseHeaders headers;
    std::string sink_problem;  // why the sink stopped the transfer
    std::string cookies;       // with keep_cookies: "name=value; ..." of the cookies set
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
    bool keep_cookies = false;  // collect the cookies the answer sets (login)
};

constexpr std::size_t kBodyCap = 1 << 20;  // listings and error pages are far smaller

// "name=value; ..." from libcurl's cookie engine, whose lines are Netscape cookie lines: domain,
// subdomains, path, secure, expiry, name, value.
std::string cookies_set(CURL* curl) {
    std::string cookies;
    curl_slist* lines = nullptr;
    if (curl_easy_getinfo(curl, CURLINFO_COOKIELIST, &lines) != CURLE_OK) return cookies;
    for (curl_slist* line = lines; line; line = line->next) {
        std::vector<std::string> fields;
        std::string item;
        std::istringstream in(line->data);
        while (std::getline(in, item, '\t')) fields.push_back(item);
        if (fields.size() < 7) continue;
        if (!cookies.empty()) cookies += "; ";
        cookies += fields[5] + "=" + fields[6];
    }
    curl_slist_free_all(lines);
    return cookies;
}

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
// appends to the part file and reports progress.
class ArchiveSink : public BodySink {
public:
    ArchiveSink(PartFile& part, std::uint64_t expected, double interval_s, bool bar)
        : part_(part), expected_(expected), progress_(interval_s, bar) {}

    bool begin(Response& r) override {
        std::uint64_t total = 0;
        if (!(r.status == 206 ? range_continues_part(r, total) : whole_file(r, total))) return false;
        if (expected_ == 0) expected_ = total;  // the listing did not give a size: trust the transfer
        if (total != 0 && expected_ != 0 && total != expected_) {
            r.sink_problem = "the file is " + std::to_string(total) + " bytes but the service advertised " +
                             std::to_string(expected_);
            mismatch_ = true;
            return false;
        }
        progress_.start(part_.size(), expected_);
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
        progress_.update(part_.size());
        return true;
    }

    std::uint64_t expected() const { return expected_; }
    bool mismatch() const { return mismatch_; }
    bool restart() const { return restart_; }
    bool disk_error() const { return disk_error_; }

private:
    bool range_continues_part(Response& r, std::uint64_t& total) {
        std::uint64_t first = 0;
        const std::string& range = r.headers.content_range;
        if (parse_content_range(range, first, total) && first == part_.size()) return true;
        r.sink_problem = "a partial answer for the wrong range ('" + range + "' after " + std::to_string(part_.size()) +
                         " bytes)";
        restart_ = true;
        return false;
    }

    // A 200 is the whole file: the server ignored or was not sent a Range.
    bool whole_file(const Response& r, std::uint64_t& total) {
        if (part_.size() > 0) {
            spdlog::info("download: the server sent the whole file instead of the rest; starting again from 0");
            part_.restart();
        }
        if (r.headers.content_length) total = *r.headers.content_length;
        return true;
    }

    PartFile& part_;
    std::uint64_t expected_;
    DownloadProgress progress_;
    bool mismatch_ = false, restart_ = false, disk_error_ = false;
};

// ---------------------------------------------------------------------------------------------

// What to do after an attempt that did not succeed.
struct Retry {
    explicit Retry(std::string why, std::optional<double> after = std::nullopt)
        : reason(std::move(why)), retry_after(after) {}
    std::string reason;                 // for the log and the final error; already redacted
    std::optional<double> retry_after;  // the server said how long to wait
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
        case CURLE_HTTP2_STREAM: return true;
        default: return false;
    }
}

// What carries over from one attempt at the archive to the next.
struct PartTransfer {
    PartFile& part;
    std::uint64_t expected = 0;    // the advertised size; 0 when unknown
    std::uint64_t high_water = 0;  // the most the .part file has held
    bool resumed = false;          // some bytes came from a Range request
};

// The answer to one attempt at the file, after any redirects.
struct Fetched {
    Response response;
    std::string url;  // where the answer came from
    bool service;     // from the service itself, not from the host it redirected to
};

class Downloader {
public:
    explicit Downloader(const DownloadOptions& options);
    ReleaseInfo info();
    DownloadResult download();

private:
    // Requests and answers.
    Request service_request(const std::string& url);
    void check_credentials() const;
    const std::string& session();
    std::string service_name() const { return std::string(source_name(o_.source)) + " EPC service"; }
    Response perform(const Request& req);
    void configure(http::Transfer& transfer, const Request& req) const;
    std::optional<Retry> judge(const Response& r, bool service, const std::string& url);
    [[noreturn]] void refused(const std::string& what, bool credentials) const;
    template <class F>
    auto with_retries(const std::string& what, F attempt) -> typename std::invoke_result_t<F, int>::value_type;
    void wait_before_retry(const Retry& retry, int failures);
    ReleaseInfo parse_info(const std::string& body);

    // The steps of download().
    void make_work_dir() const;
    static bool reuse_finished(DownloadResult& result);
    static void prepare_part(PartFile& part, const ReleaseInfo& info);
    bool fetch(PartFile& part, std::uint64_t expected);
    std::optional<bool> attempt_download(int n, PartTransfer& state);
    Fetched fetch_file(int n, ArchiveSink& sink, std::optional<std::uint64_t> from);
    void check_sink(const Response& r, const ArchiveSink& sink, PartTransfer& state);
    bool resume_refused(const Fetched& f, std::uint64_t from, PartTransfer& state);
    void check_complete(const ArchiveSink& sink, PartTransfer& state);
    [[noreturn]] void start_over(PartTransfer& state, std::string why);
    static void summarise(const DownloadResult& result, Clock::time_point started);

    const DownloadOptions& o_;
    std::string base_, file_name_, file_url_, info_url_;
    // Very short values are not secrets and would mangle messages.
    http::Redactor redact_{6};
    http::Backoff backoff_;
    int attempts_ = 0;
    bool progressed_ = false;
    std::string session_;  // legacy login-with-token session cookie
};

Downloader::Downloader(const DownloadOptions& options)
    : o_(options), backoff_(options.initial_backoff_s, options.max_backoff_s) {
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
}

ReleaseInfo Downloader::info() {
    check_credentials();
    Response r = with_retries("asking for the release's size", [&](int) -> std::optional<Response> {
        Request req = service_request(info_url_);
        req.headers.emplace_back("Accept: application/json");
        Response r = perform(req);
        if (auto retry = judge(r, /*service=*/true, info_url_)) throw *retry;
        return r;
    });
    return parse_info(r.body);
}

// ---- Requests and answers ---------------------------------------------------------------------

Request Downloader::service_request(const std::string& url) {
    Request req;
    req.url = url;
    if (o_.source == Source::current) req.headers.push_back("Authorization: Bearer " + o_.creds.token);
    else if (!o_.creds.api_key.empty()) req.basic = &o_.creds;
    else req.headers.push_back("Cookie: " + session());
    // No Accept header on file requests: the legacy API chooses its format by Accept.
    return req;
}

void Downloader::check_credentials() const {
    if (o_.source == Source::current && o_.creds.token.empty())
        throw Error(exit_usage,
                    "the current EPC service needs a token: set EPC_TOKEN (copy it from your account page)");
    if (o_.source == Source::legacy &&
        (o_.creds.email.empty() || (o_.creds.api_key.empty() && o_.creds.login_token.empty())))
        throw Error(exit_usage, "the legacy EPC service needs EPC_API_EMAIL and EPC_API_KEY (or, for older "
                                "accounts, EPC_API_EMAIL and EPC_LOGIN_TOKEN)");
}

// The older legacy sign-in: GET /login-with-token?token=..&email=.. answers with a session cookie,
// which then goes (to the service only, never to S3) with every request. Logged in once.
const std::string& Downloader::session() {
    if (!session_.empty()) return session_;
    const std::string url = base_ + "/login-with-token?token=" + http::url_encode(o_.creds.login_token) +
                            "&email=" + http::url_encode(o_.creds.email);
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

Response Downloader::perform(const Request& req) {
    static const std::string agent = std::string("epc-import/") + EPC_VERSION;
    Response r;
    http::Transfer transfer(req.url, agent, req.headers);
    configure(transfer, req);
    // A 2xx body goes to the request's sink, anything else (an error page) is kept for messages.
    bool started = false, to_sink = false;
    auto start = [&] {
        started = true;
        r.status = transfer.status();
        r.headers = transfer.headers();
        to_sink = req.sink && r.status >= 200 && r.status < 300;
        return !to_sink || req.sink->begin(r);
    };
    transfer.divert_body([&](const char* data, std::size_t n) {
        if (!started && !start()) return false;
        return to_sink ? req.sink->write(data, n, r) : transfer.keep(data, n);
    });
    r.code = transfer.perform();
    if (r.code == CURLE_OK && !started && !start()) r.code = CURLE_WRITE_ERROR;  // an empty body
    r.status = transfer.status();
    r.headers = transfer.headers();
    r.body = transfer.body();
    if (r.code != CURLE_OK) r.error = redact_(transfer.error_text(r.code));
    char* location = nullptr;
    if (curl_easy_getinfo(transfer.handle(), CURLINFO_REDIRECT_URL, &location) == CURLE_OK && location)
        r.location = location;
    if (req.keep_cookies) r.cookies = cookies_set(transfer.handle());
    return r;
}

void Downloader::configure(http::Transfer& transfer, const Request& req) const {
    CURL* c = transfer.handle();
    transfer.keep_body(kBodyCap, http::BodyBuffer::Overflow::truncate);
    curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
    // Redirects are followed by hand: the service's Authorization must never reach S3.
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, o_.connect_timeout_s);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, o_.low_speed_bytes);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, o_.low_speed_time_s);
    curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
    if (req.basic) {
        curl_easy_setopt(c, CURLOPT_HTTPAUTH, CURLAUTH_BASIC);
        curl_easy_setopt(c, CURLOPT_USERNAME, req.basic->email.c_str());
        curl_easy_setopt(c, CURLOPT_PASSWORD, req.basic->api_key.c_str());
    }
    if (req.keep_cookies) curl_easy_setopt(c, CURLOPT_COOKIEFILE, "");  // in-memory cookie engine
    if (req.range_from) curl_easy_setopt(c, CURLOPT_RANGE, (std::to_string(*req.range_from) + "-").c_str());
}

// nullopt: the answer is usable (2xx or a redirect). A Retry: try again. Throws when retrying
// cannot help.
std::optional<Retry> Downloader::judge(const Response& r, bool service, const std::string& url) {
    std::string where = redact_url(url);
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
        if (!r.headers.retry_after.empty()) retry.retry_after = http::parse_retry_after(r.headers.retry_after);
        return retry;
    }
    if (s >= 500) return Retry{what};
    if (service && (s == 401 || s == 403)) refused(what, /*credentials=*/true);
    // A presigned URL that expired (or was already used) is refused with 403: ask for another.
    if (!service && s == 403) return Retry{"the download URL was refused, probably expired (" + what + ")"};
    if (service && s == 404) refused(what, /*credentials=*/false);
    throw Error(exit_internal, "unexpected answer: " + what);
}

void Downloader::refused(const std::string& what, bool credentials) const {
    if (!credentials)
        throw Error(exit_usage, "no such file: the " + service_name() + " has no " +
                                    std::string(cert_type_name(o_.type)) + " file (" + what +
                                    "); check --certtype, --source and --base-url");
    if (o_.source == Source::current)
        throw Error(exit_credentials, "the current EPC service refused the token (" + what +
                                          "): check EPC_TOKEN (the token from your account page)");
    throw Error(exit_credentials, "the legacy EPC service refused the credentials (" + what +
                                      "): check EPC_API_EMAIL and EPC_API_KEY (or EPC_LOGIN_TOKEN)");
}

// Runs `attempt` until it returns a value; each Retry it throws waits (Retry-After or backoff) and
// counts against max_attempts. An attempt that sets progressed_ (the .part file grew past its
// high-water mark) resets the count: a long download may be cut many times and still finish.
template <class F>
auto Downloader::with_retries(const std::string& what, F attempt) -> typename std::invoke_result_t<F, int>::value_type {
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
            wait_before_retry(retry, failures);
        }
    }
}

void Downloader::wait_before_retry(const Retry& retry, int failures) {
    double wait = retry.retry_after ? std::min(*retry.retry_after, o_.max_retry_after_s) : backoff_.wait(failures);
    spdlog::warn("download: {}; retrying in {:.1f} s (attempt {} of {})", retry.reason, wait, failures + 1,
                 o_.max_attempts);
    std::this_thread::sleep_for(std::chrono::duration<double>(wait));
}

ReleaseInfo Downloader::parse_info(const std::string& body) {
    ReleaseInfo info;
    info.file_name = file_name_;
    json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
    std::string where = redact_url(info_url_);
    if (o_.source == Source::current) {
        const json* data = j.is_object() && j.contains("data") ? &j["data"] : nullptr;
        const json* size = data && data->is_object() && data->contains("fileSize") ? &(*data)["fileSize"] : nullptr;
        if (size && size->is_number_unsigned()) info.size = size->get<std::uint64_t>();
        else if (size && size->is_string()) info.size = std::strtoull(size->get<std::string>().c_str(), nullptr, 10);
        if (info.size == 0)
            throw Error(exit_internal,
                        "unexpected answer from " + where + ": no data.fileSize in '" + redact_(excerpt(body)) + "'");
        if (data->contains("lastUpdated") && (*data)["lastUpdated"].is_string())
            info.last_updated = (*data)["lastUpdated"].get<std::string>();
        return info;
    }
    if (j.is_discarded())
        throw Error(exit_internal, "unexpected answer from " + where + ": not JSON ('" + redact_(excerpt(body)) + "')");
    if (auto size = detail::legacy_listed_size(j, file_name_)) info.size = *size;
    else spdlog::warn("download: {} does not list {}; its size will be taken from the transfer", where, file_name_);
    return info;
}

// ---- The steps of download() ------------------------------------------------------------------

DownloadResult Downloader::download() {
    DownloadResult result;
    result.info = info();
    result.path = download_path(o_);
    make_work_dir();
    if (reuse_finished(result)) return result;

    PartFile part(result.path + ".part");
    prepare_part(part, result.info);
    spdlog::info("download: {} {} from {} ({})", source_name(o_.source), result.info.file_name, redact_url(base_),
                 result.info.size ? human_bytes(double(result.info.size)) : "size unknown");
    auto started = Clock::now();
    result.resumed = fetch(part, result.info.size);
    result.attempts = attempts_;
    result.bytes = part.size();
    result.sha256 = keep_finished_download(part, result.path, result.info);
    summarise(result, started);
    return result;
}

void Downloader::make_work_dir() const {
    std::error_code ec;
    fs::create_directories(o_.work_dir, ec);
    if (ec) throw Error(exit_usage, "cannot create the work directory " + o_.work_dir + ": " + ec.message());
}

// A finished download of this very release (another shard on this host, or a run that failed
// after downloading) is used as it is.
bool Downloader::reuse_finished(DownloadResult& result) {
    std::optional<std::string> sha256 = finished_download(result.path, result.info);
    if (!sha256) {
        forget_finished_download(result.path);
        return false;
    }
    result.bytes = result.info.size;
    result.sha256 = *sha256;
    spdlog::info("download: {} already holds this release ({}, sha256 {}); not downloading it again", result.path,
                 human_bytes(double(result.bytes)), result.sha256);
    return true;
}

void Downloader::prepare_part(PartFile& part, const ReleaseInfo& info) {
    if (open_part(part, info))
        spdlog::info("download: resuming {} at {} of {}", part.path(), human_bytes(double(part.size())),
                     human_bytes(double(info.size)));
}

// Returns whether some of the bytes came from a Range request.
bool Downloader::fetch(PartFile& part, std::uint64_t expected) {
    PartTransfer state{part, expected, part.size()};
    with_retries("downloading " + file_name_, [&](int n) { return attempt_download(n, state); });
    return state.resumed;
}

std::optional<bool> Downloader::attempt_download(int n, PartTransfer& state) {
    ArchiveSink sink(state.part, state.expected, o_.progress_bar ? 0.25 : o_.progress_interval_s, o_.progress_bar);
    std::optional<std::uint64_t> from;
    if (state.part.size() > 0) from = state.part.size();
    Fetched f = fetch_file(n, sink, from);
    const Response& r = f.response;
    state.part.flush();
    if (from && r.status == 206 && !sink.restart()) state.resumed = true;
    if (state.part.size() > state.high_water) {
        state.high_water = state.part.size();
        progressed_ = true;
    }
    check_sink(r, sink, state);
    if (r.code == CURLE_OK && r.status == 416 && from) return resume_refused(f, *from, state);
    if (auto retry = judge(r, f.service, f.url)) throw *retry;
    if (r.status < 200 || r.status >= 300)
        throw Error(exit_internal, "unexpected HTTP " + std::to_string(r.status) + " from " + redact_url(f.url));
    check_complete(sink, state);
    return true;
}

// Always asks the service for a new URL: a presigned URL expires in ~30 s and is single-use in
// practice.
Fetched Downloader::fetch_file(int n, ArchiveSink& sink, std::optional<std::uint64_t> from) {
    Request req = service_request(file_url_);
    req.range_from = from;
    req.sink = &sink;  // a mirror may serve the file itself instead of redirecting
    Fetched f{perform(req), file_url_, true};
    for (int hops = 0; f.response.code == CURLE_OK && f.response.status >= 300 && f.response.status < 400 &&
                       !f.response.location.empty();
         ++hops) {
        if (hops == 3) throw Error(exit_internal, "too many redirects from " + redact_url(file_url_));
        f.url = f.response.location;
        f.service = false;
        redact_.add_query_of(f.url);
        spdlog::debug("download: attempt {}: fetching {}{}", n, redact_url(f.url),
                      from ? " from byte " + std::to_string(*from) : std::string());
        Request next;  // no credentials: the signed URL carries its own authorisation
        next.url = f.url;
        next.range_from = from;
        next.sink = &sink;
        f.response = perform(next);
    }
    return f;
}

void Downloader::check_sink(const Response& r, const ArchiveSink& sink, PartTransfer& state) {
    if (sink.disk_error()) throw Error(exit_internal, r.sink_problem);
    if (sink.mismatch() || sink.restart()) start_over(state, redact_(r.sink_problem));
}

// 416 to a resume: the part file already holds everything (a run that stopped before the rename),
// or it is not this file after all.
bool Downloader::resume_refused(const Fetched& f, std::uint64_t from, PartTransfer& state) {
    const std::string& range = f.response.headers.content_range;  // "bytes */TOTAL"
    std::size_t slash = range.find('/');
    std::uint64_t total = slash == std::string::npos ? 0 : std::strtoull(range.c_str() + slash + 1, nullptr, 10);
    if (state.expected != 0 && from == state.expected && (total == 0 || total == state.expected)) {
        state.resumed = true;
        return true;
    }
    start_over(state, "HTTP 416 from " + redact_url(f.url) + " when resuming at byte " + std::to_string(from));
}

void Downloader::check_complete(const ArchiveSink& sink, PartTransfer& state) {
    if (sink.expected() == 0 || state.part.size() == sink.expected()) return;
    start_over(state, "the download ended at " + std::to_string(state.part.size()) +
                          " bytes but the service advertised " + std::to_string(sink.expected()));
}

// The .part file cannot be continued: empty it and try again from the start.
void Downloader::start_over(PartTransfer& state, std::string why) {
    state.part.restart();
    state.resumed = false;
    progressed_ = false;
    throw Retry{std::move(why)};
}

void Downloader::summarise(const DownloadResult& result, Clock::time_point started) {
    double seconds = std::chrono::duration<double>(Clock::now() - started).count();
    spdlog::info("download: {} complete, {} in {:.1f} s ({}/s), {} attempt{}, sha256 {}", result.path,
                 human_bytes(double(result.bytes)), seconds,
                 human_bytes(seconds > 0 ? double(result.bytes) / seconds : 0), result.attempts,
                 result.attempts == 1 ? "" : "s", result.sha256);
}

}  // namespace

// ---------------------------------------------------------------------------------------------

std::string_view source_name(Source source) { return source == Source::current ? "current" : "legacy"; }

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

ReleaseInfo fetch_release_info(const DownloadOptions& options) { return Downloader(options).info(); }

DownloadResult download_release(const DownloadOptions& options) { return Downloader(options).download(); }

namespace {

// A listed size: a number, a numeric string, or (at the top level) an object holding one of those
// under a size-like key.
std::optional<std::uint64_t> listed_size_value(const json& v, bool nested) {
    if (v.is_number_unsigned()) return v.get<std::uint64_t>();
    if (v.is_number_integer() && v.get<std::int64_t>() >= 0) return std::uint64_t(v.get<std::int64_t>());
    if (v.is_string()) {
        const auto& s = v.get_ref<const std::string&>();
        char* end = nullptr;
        const unsigned long long n = std::strtoull(s.c_str(), &end, 10);
        if (!s.empty() && end && *end == '\0') return n;
    }
    if (v.is_object() && !nested)
        for (const char* key : {"size", "fileSize", "file_size", "bytes"})
            if (v.contains(key)) return listed_size_value(v[key], true);
    return std::nullopt;
}

// An array entry that names the file: {"name": "...", "size": N}.
bool names_file(const json& item, const std::string& name) {
    if (!item.is_object()) return false;
    static constexpr const char* kNameKeys[] = {"name", "file", "fileName", "filename"};
    return std::any_of(std::begin(kNameKeys), std::end(kNameKeys),
                       [&](const char* key) { return item.contains(key) && item[key] == name; });
}

std::optional<std::uint64_t> find_listed_size(const json& j, const std::string& name, int depth) {
    if (j.is_object()) {
        if (j.contains(name)) return listed_size_value(j[name], false);
        if (depth == 0) return std::nullopt;
        for (const auto& item : j.items())
            if (auto s = find_listed_size(item.value(), name, depth - 1)) return s;
    } else if (j.is_array() && depth > 0) {
        for (const auto& item : j) {
            if (names_file(item, name)) return listed_size_value(item, false);
            if (auto s = find_listed_size(item, name, depth - 1)) return s;
        }
    }
    return std::nullopt;
}

}  // namespace

namespace detail {

std::optional<std::uint64_t> legacy_listed_size(const json& listing, const std::string& name) {
    return find_listed_size(listing, name, 2);
}

}  // namespace detail

}  // namespace epc
