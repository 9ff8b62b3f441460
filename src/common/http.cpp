#include "epc/common/http.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <ctime>
#include <mutex>

#include "epc/common/types.hpp"

namespace epc::http {

namespace {

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

std::string_view trim(std::string_view s) {
    while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
    while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
    return s;
}

bool iequals(std::string_view a, std::string_view b) {
    auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; };
    return a.size() == b.size() &&
           std::equal(a.begin(), a.end(), b.begin(), [&](char x, char y) { return lower(x) == lower(y); });
}

// ASCII only: under a single-byte locale isalnum() would pass bytes of UTF-8 text unencoded.
bool is_unreserved(unsigned char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
           c == '_' || c == '~';
}

}  // namespace

// ---- libcurl handles ---------------------------------------------------------------------------

void global_init() {
    static std::once_flag once;
    std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

EasyHandle new_easy() {
    global_init();
    EasyHandle easy(curl_easy_init());
    if (!easy) throw Error(exit_internal, "cannot initialise libcurl (curl_easy_init failed)");
    return easy;
}

MultiHandle new_multi() {
    global_init();
    MultiHandle multi(curl_multi_init());
    if (!multi) throw Error(exit_internal, "cannot initialise libcurl (curl_multi_init failed)");
    return multi;
}

HeaderList header_list(const std::vector<std::string>& lines) {
    HeaderList list;
    for (const std::string& line : lines) {
        curl_slist* grown = curl_slist_append(list.get(), line.c_str());
        if (!grown) throw Error(exit_internal, "out of memory for the request headers");
        (void)list.release();  // `grown` is the same list, one line longer
        list.reset(grown);
    }
    return list;
}

// ---- One request -------------------------------------------------------------------------------

void ResponseHeaders::take(std::string_view line) {
    if (line.rfind("HTTP/", 0) == 0) {
        *this = ResponseHeaders();
        return;
    }
    std::size_t colon = line.find(':');
    if (colon == std::string_view::npos) return;
    std::string_view name = trim(line.substr(0, colon));
    std::string_view value = trim(line.substr(colon + 1));
    if (iequals(name, "retry-after")) {
        retry_after = std::string(value);
    } else if (iequals(name, "content-range")) {
        content_range = std::string(value);
    } else if (iequals(name, "content-length")) {
        std::uint64_t n = 0;
        auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
        if (!value.empty() && ec == std::errc() && end == value.data() + value.size()) content_length = n;
    }
}

bool BodyBuffer::append(const char* data, std::size_t size) {
    std::size_t room = text.size() < limit ? limit - text.size() : 0;
    if (size > room && overflow == Overflow::fail) return false;
    text.append(data, std::min(size, room));
    return true;
}

Transfer::Transfer(const std::string& url, const std::string& user_agent, const std::vector<std::string>& headers)
    : easy_(new_easy()), request_headers_(header_list(headers)) {
    CURL* h = easy_.get();
    curl_easy_setopt(h, CURLOPT_URL, url.c_str());
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_USERAGENT, user_agent.c_str());
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, error_);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, this);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, this);
    if (request_headers_) curl_easy_setopt(h, CURLOPT_HTTPHEADER, request_headers_.get());
}

void Transfer::keep_body(std::size_t limit, BodyBuffer::Overflow overflow) {
    body_.limit = limit;
    body_.overflow = overflow;
}

void Transfer::post(const std::string& body) {
    curl_easy_setopt(easy_.get(), CURLOPT_POSTFIELDSIZE, static_cast<long>(body.size()));
    curl_easy_setopt(easy_.get(), CURLOPT_COPYPOSTFIELDS, body.c_str());
}

long Transfer::status() const {
    long status = 0;
    curl_easy_getinfo(easy_.get(), CURLINFO_RESPONSE_CODE, &status);
    return status;
}

std::string Transfer::error_text(CURLcode code) const {
    return error_[0] ? std::string(error_) : std::string(curl_easy_strerror(code));
}

std::size_t Transfer::on_header(char* data, std::size_t size, std::size_t count, void* self) {
    static_cast<Transfer*>(self)->headers_.take(std::string_view(data, size * count));
    return size * count;
}

std::size_t Transfer::on_body(char* data, std::size_t size, std::size_t count, void* self) {
    auto* t = static_cast<Transfer*>(self);
    bool go_on = t->writer_ ? t->writer_(data, size * count) : t->keep(data, size * count);
    return go_on ? size * count : 0;  // anything short of `count` makes libcurl stop
}

// ---- Waiting between attempts ------------------------------------------------------------------

std::optional<double> parse_retry_after(std::string_view value, std::chrono::system_clock::time_point now) {
    value = trim(value);
    if (value.empty()) return std::nullopt;
    if (std::all_of(value.begin(), value.end(), [](char c) { return c >= '0' && c <= '9'; })) {
        if (value.size() > 9) return 1e9;
        return std::stod(std::string(value));
    }
    std::time_t when = curl_getdate(std::string(value).c_str(), nullptr);
    if (when == -1) return std::nullopt;
    return std::max(0.0, std::chrono::duration<double>(std::chrono::system_clock::from_time_t(when) - now).count());
}

Backoff::Backoff(double first_s, double max_s, std::uint64_t seed) : first_s_(first_s), max_s_(max_s), rng_(seed) {}

double Backoff::bound(int failures) const {
    return std::max(0.0, std::min(max_s_, first_s_ * std::pow(2.0, std::max(0, failures - 1))));
}

double Backoff::wait(int failures) { return std::uniform_real_distribution<double>(0.0, bound(failures))(rng_); }

// ---- Text that goes into URLs, logs and errors -------------------------------------------------

std::string url_encode(std::string_view text) {
    static const char hex[] = "0123456789ABCDEF";
    std::string out;
    out.reserve(text.size() * 3);
    for (char ch : text) {
        auto c = static_cast<unsigned char>(ch);
        if (is_unreserved(c)) {
            out += ch;
        } else {
            out += '%';
            out += hex[c >> 4];
            out += hex[c & 15];
        }
    }
    return out;
}

std::string redact_url(std::string_view url) {
    std::string u(url.substr(0, url.find_first_of("?#")));
    std::size_t scheme = u.find("://");
    std::size_t host = scheme == std::string::npos ? 0 : scheme + 3;
    std::size_t slash = u.find('/', host);
    std::size_t at = u.rfind('@', slash == std::string::npos ? u.size() : slash);
    if (at != std::string::npos && at >= host) u.erase(host, at + 1 - host);
    return u;
}

void Redactor::add(std::string_view secret) {
    if (secret.empty() || secret.size() < min_length_) return;
    secrets_.emplace_back(secret);
    std::string encoded = url_encode(secret);
    if (encoded != secret) secrets_.push_back(std::move(encoded));
}

void Redactor::add_query_of(std::string_view url) {
    std::size_t q = url.find('?');
    if (q == std::string_view::npos) return;
    std::string_view query = url.substr(q + 1);
    add(query);
    while (!query.empty()) {
        std::size_t amp = query.find('&');
        std::string_view pair = query.substr(0, amp);
        if (std::size_t eq = pair.find('='); eq != std::string_view::npos) add(pair.substr(eq + 1));
        query.remove_prefix(amp == std::string_view::npos ? query.size() : amp + 1);
    }
}

std::string Redactor::operator()(std::string text) const {
    static const std::string mask = "***";
    for (const std::string& secret : secrets_)
        for (std::size_t at = text.find(secret); at != std::string::npos; at = text.find(secret, at + mask.size()))
            text.replace(at, secret.size(), mask);
    return text;
}

}  // namespace epc::http
