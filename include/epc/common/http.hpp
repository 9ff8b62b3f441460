// HTTP plumbing shared by the publisher download (extract/) and the HTTP geocoders (geocode/):
// libcurl handles, one request's common settings and what its answer leaves behind, waits between
// attempts, URL encoding, and keeping secrets out of log lines and error messages. The policies
// (what to retry, how long to wait at most, which credentials to send) stay with the callers.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include <curl/curl.h>

namespace epc::http {

// ---- libcurl handles ---------------------------------------------------------------------------

struct EasyDeleter {
    void operator()(CURL* handle) const { curl_easy_cleanup(handle); }
};
struct MultiDeleter {
    void operator()(CURLM* handle) const { curl_multi_cleanup(handle); }
};
struct SlistDeleter {
    void operator()(curl_slist* list) const { curl_slist_free_all(list); }
};
using EasyHandle = std::unique_ptr<CURL, EasyDeleter>;
using MultiHandle = std::unique_ptr<CURLM, MultiDeleter>;
using HeaderList = std::unique_ptr<curl_slist, SlistDeleter>;

// curl_global_init, once per process. It is not thread-safe itself, so every handle made here
// goes through it first.
void global_init();
// Throw Error(exit_internal) when libcurl cannot make the handle or list.
EasyHandle new_easy();
MultiHandle new_multi();
// "Name: value" lines as libcurl takes them; null for no lines.
HeaderList header_list(const std::vector<std::string>& lines);

// ---- One request -------------------------------------------------------------------------------

// The response headers the callers act on.
struct ResponseHeaders {
    std::string retry_after;
    std::string content_range;
    std::optional<std::uint64_t> content_length;

    // One raw header line as libcurl delivers it (with its CRLF). A status line starts a new
    // response, e.g. after a 100 Continue: what the previous one said no longer applies.
    void take(std::string_view line);
};

// The start of a response body, up to `limit` bytes. Past the limit the rest is dropped
// (Overflow::truncate: an error page only needs its start) or the transfer fails (Overflow::fail:
// an answer that large cannot be what was asked for).
struct BodyBuffer {
    enum class Overflow { truncate, fail };
    std::size_t limit = 1 << 20;
    Overflow overflow = Overflow::truncate;
    std::string text;

    // False when the transfer must stop.
    bool append(const char* data, std::size_t size);
};

// One request's easy handle with the settings every request here shares: http and https only, no
// signals (other threads run), our User-Agent, the given request headers, and libcurl's error text
// and the response headers and body captured. Callers add their own settings (timeouts, method,
// redirects) on handle() and run it with perform() or through a multi handle. Neither copied nor
// moved: libcurl holds pointers into it.
class Transfer {
public:
    using BodyWriter = std::function<bool(const char* data, std::size_t size)>;

    Transfer(const std::string& url, const std::string& user_agent, const std::vector<std::string>& headers = {});
    Transfer(const Transfer&) = delete;
    Transfer& operator=(const Transfer&) = delete;
    ~Transfer() = default;

    CURL* handle() const { return easy_.get(); }
    void keep_body(std::size_t limit, BodyBuffer::Overflow overflow);
    // Sends the body to `writer` instead of body(); returning false stops the transfer. The
    // writer may hand chunks back to keep(), e.g. an error page in place of a file.
    void divert_body(BodyWriter writer) { writer_ = std::move(writer); }
    bool keep(const char* data, std::size_t size) { return body_.append(data, size); }
    void post(const std::string& body);  // the content type goes in the request headers

    CURLcode perform() { return curl_easy_perform(easy_.get()); }

    long status() const;  // 0 before the status line arrived
    const ResponseHeaders& headers() const { return headers_; }
    const std::string& body() const { return body_.text; }
    // libcurl's own account of a failure when it wrote one, else the generic text for `code`.
    std::string error_text(CURLcode code) const;

private:
    static std::size_t on_header(char* data, std::size_t size, std::size_t count, void* self);
    static std::size_t on_body(char* data, std::size_t size, std::size_t count, void* self);

    EasyHandle easy_;
    HeaderList request_headers_;
    ResponseHeaders headers_;
    BodyBuffer body_;
    BodyWriter writer_;
    char error_[CURL_ERROR_SIZE] = {};
};

// ---- Waiting between attempts ------------------------------------------------------------------

// Seconds a Retry-After value asks for: delta-seconds ("120") or an HTTP-date ("Wed, 21 Oct 2015
// 07:28:00 GMT") measured from `now`. A date in the past gives 0; an absurdly long number gives
// 1e9 (the caller's cap decides); anything else is nullopt.
std::optional<double> parse_retry_after(std::string_view value,
                                        std::chrono::system_clock::time_point now = std::chrono::system_clock::now());

// Exponential backoff with full jitter: the wait after the n-th failure is uniform between 0 and
// min(max_s, first_s * 2^(n-1)), so that requests which failed together do not return together.
class Backoff {
public:
    Backoff(double first_s, double max_s, std::uint64_t seed = std::random_device{}());
    double bound(int failures) const;
    double wait(int failures);

private:
    double first_s_;
    double max_s_;
    std::mt19937_64 rng_;
};

// ---- Text that goes into URLs, logs and errors -------------------------------------------------

// RFC 3986 percent-encoding of every byte but the unreserved characters (A-Z a-z 0-9 - . _ ~).
std::string url_encode(std::string_view text);

// scheme://host[:port]/path of a URL: no user info, query or fragment.
std::string redact_url(std::string_view url);

// Replaces known secrets with "***" in a text on its way to a log line or an error message: server
// answers and libcurl messages may quote a request's credentials back.
class Redactor {
public:
    // Shorter values are not treated as secrets: a presigned URL's "X-Amz-Expires=30" is not one,
    // and hiding every "30" would mangle messages.
    explicit Redactor(std::size_t min_length = 1) : min_length_(min_length) {}
    // The secret as it is and percent-encoded, as it appears in a query string.
    void add(std::string_view secret);
    // A URL's query string (a presigned URL's signature and credential scope): all of it, and each
    // value on its own in case a server quotes one.
    void add_query_of(std::string_view url);
    std::string operator()(std::string text) const;

private:
    std::size_t min_length_;
    std::vector<std::string> secrets_;
};

}  // namespace epc::http
