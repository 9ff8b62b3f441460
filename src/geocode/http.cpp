// HTTP geocoding: one engine (libcurl multi interface, on the calling thread) that paces, bounds,
// retries and trips a circuit breaker, and four providers that only build requests and read answers.
#include "epc/geocode/http.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <deque>
#include <map>
#include <queue>
#include <unordered_map>
#include <utility>

#include <curl/curl.h>
#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include "epc/common/http.hpp"
#include "epc/common/types.hpp"
#include "epc/geocode/geocoder.hpp"

namespace epc {

const char* precision_name(Precision precision) {
    switch (precision) {
        case Precision::property: return "property";
        case Precision::street: return "street";
        case Precision::postcode: return "postcode";
    }
    return "?";
}

namespace geocode_http {

double documented_rate(const std::string& provider) {
    // Nominatim's usage policy (operations.osmfoundation.org/policies/nominatim): "an absolute
    // maximum of 1 request per second".
    if (provider == "nominatim") return 1;
    // Google Geocoding API quota: 3,000 queries per minute per project (docs/data-formats.md §6) = 50/s.
    if (provider == "google") return 50;
    // OS Data Hub plans allow 600 transactions per minute (docs/data-formats.md §6) = 10/s.
    if (provider == "os-places") return 10;
    // postcodes.io publishes no limit ("fair use"); 10 bulk requests/s is up to 1,000 postcodes/s,
    // plenty for our misses and gentle on a free service. A self-hosted copy can take a higher --rate.
    if (provider == "postcodes-io") return 10;
    return 1;
}

}  // namespace geocode_http

namespace {

using namespace geocode_http;
using http::url_encode;
using Clock = std::chrono::steady_clock;
using json = nlohmann::json;

// ---------------------------------------------------------------------------------------------
// Providers: what to ask and how to read the answer. No I/O here.

// One HTTP request and the queries its answer resolves.
struct Job {
    std::string url;                   // complete, may carry the API key: never log it unscrubbed
    std::string body;                  // non-empty: POST it as JSON
    std::vector<std::size_t> queries;  // indexes into the caller's vector
};

// A provider's reading of a 2xx answer.
struct Reply {
    enum class Kind {
        answered,      // `results` holds one result per query of the job
        retry,         // transient trouble reported in the body (Google's UNKNOWN_ERROR)
        rate_limited,  // slow down, then retry (Google's OVER_QUERY_LIMIT)
        failed,        // permanent for this request (Google's REQUEST_DENIED)
        malformed,     // not the JSON the provider documents
    };
    Kind kind = Kind::malformed;
    std::vector<GeocodeResult> results;
    std::string error;

    static Reply malformed_because(std::string why) { return {Kind::malformed, {}, std::move(why)}; }
};

GeocodeResult found(double latitude, double longitude, Precision precision) {
    GeocodeResult r;
    r.status = GeocodeResult::Status::found;
    r.latitude = latitude;
    r.longitude = longitude;
    r.precision = precision;
    return r;
}

GeocodeResult not_found() {
    GeocodeResult r;
    r.status = GeocodeResult::Status::not_found;
    return r;
}

// A coordinate as a JSON number or (Nominatim) a numeric string; nullopt if neither.
std::optional<double> coordinate(const json& object, const char* field, double limit) {
    if (!object.is_object()) return std::nullopt;
    auto it = object.find(field);
    if (it == object.end()) return std::nullopt;
    double value = 0;
    if (it->is_number()) {
        value = it->get<double>();
    } else if (it->is_string()) {
        // from_chars, unlike strtod, ignores the locale: "53.25" stays 53.25 under LC_NUMERIC=de_DE.
        const auto& s = it->get_ref<const std::string&>();
        auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
        if (s.empty() || ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
    } else {
        return std::nullopt;
    }
    if (!std::isfinite(value) || std::fabs(value) > limit) return std::nullopt;
    return value;
}

// The free-text query for address geocoders: the address, then the postcode unless it already
// ends the address.
std::string address_text(const GeocodeQuery& q) {
    std::string text = q.address;
    if (!q.postcode.empty() && text.find(q.postcode) == std::string::npos)
        text += (text.empty() ? "" : ", ") + q.postcode;
    return text;
}

std::string compact_postcode(const std::string& postcode) {
    std::string out;
    for (char c : postcode)
        if (!std::isspace(static_cast<unsigned char>(c)))
            out += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    return out;
}

class Provider {
public:
    using Answer = std::function<void(std::size_t, const GeocodeResult&)>;
    virtual ~Provider() = default;
    virtual std::string name() const = 0;
    virtual Precision precision() const = 0;
    virtual std::string default_base() const = 0;
    virtual bool needs_key() const { return false; }
    // Turns queries into requests; queries that need none (nothing to ask) go to `answer`.
    virtual void plan(const std::vector<GeocodeQuery>& queries, const std::string& base, const std::string& key,
                      std::vector<Job>& jobs, const Answer& answer) const = 0;
    virtual Reply read(const Job& job, const std::vector<GeocodeQuery>& queries, const std::string& body) const = 0;
};

// Parses, turning a syntax error into nullopt.
std::optional<json> parse_json(const std::string& body) {
    json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) return std::nullopt;
    return j;
}

class PostcodesIo final : public Provider {
public:
    // postcodes.io's bulk lookup takes at most 100 postcodes per request.
    static constexpr std::size_t batch = 100;

    std::string name() const override { return "postcodes-io"; }
    Precision precision() const override { return Precision::postcode; }
    std::string default_base() const override { return "https://api.postcodes.io"; }

    void plan(const std::vector<GeocodeQuery>& queries, const std::string& base, const std::string&,
              std::vector<Job>& jobs, const Answer& answer) const override {
        // Distinct postcodes in order of first appearance; every query with that postcode shares
        // the answer.
        std::vector<std::string> distinct;
        std::unordered_map<std::string, std::vector<std::size_t>> users;
        for (std::size_t i = 0; i < queries.size(); ++i) {
            std::string pc = compact_postcode(queries[i].postcode);
            if (pc.empty()) {
                answer(i, not_found());
                continue;
            }
            auto& list = users[pc];
            if (list.empty()) distinct.push_back(pc);
            list.push_back(i);
        }
        for (std::size_t start = 0; start < distinct.size(); start += batch) {
            Job job;
            job.url = base + "/postcodes";
            json postcodes = json::array();
            for (std::size_t k = start; k < std::min(distinct.size(), start + batch); ++k) {
                const auto& list = users[distinct[k]];
                postcodes.push_back(queries[list.front()].postcode);
                job.queries.insert(job.queries.end(), list.begin(), list.end());
            }
            job.body = json{{"postcodes", postcodes}}.dump();
            jobs.push_back(std::move(job));
        }
    }

    Reply read(const Job& job, const std::vector<GeocodeQuery>& queries, const std::string& body) const override {
        auto j = parse_json(body);
        if (!j || !j->is_object() || !j->contains("result") || !(*j)["result"].is_array())
            return Reply::malformed_because("postcodes.io answer is not {\"result\":[...]}");
        // The answer is in input order, but matching on the echoed query does not depend on it.
        std::unordered_map<std::string, const json*> by_postcode;
        for (const json& item : (*j)["result"]) {
            if (!item.is_object() || !item.contains("query") || !item["query"].is_string() || !item.contains("result"))
                return Reply::malformed_because("postcodes.io result item without query/result");
            by_postcode[compact_postcode(item["query"].get<std::string>())] = &item["result"];
        }
        Reply reply;
        reply.kind = Reply::Kind::answered;
        for (std::size_t i : job.queries) {
            auto it = by_postcode.find(compact_postcode(queries[i].postcode));
            if (it == by_postcode.end()) {
                GeocodeResult missing;
                missing.error = "postcodes.io answer lacks " + queries[i].postcode;
                reply.results.push_back(missing);
                continue;
            }
            const json& r = *it->second;
            if (r.is_null()) {
                reply.results.push_back(not_found());
                continue;
            }
            auto lat = coordinate(r, "latitude", 90);
            auto lon = coordinate(r, "longitude", 180);
            // Some live postcodes have no coordinates (latitude null): nothing to place them with.
            if (r.is_object() && r.contains("latitude") && r["latitude"].is_null()) {
                reply.results.push_back(not_found());
            } else if (!lat || !lon) {
                return Reply::malformed_because("postcodes.io result without latitude/longitude");
            } else {
                reply.results.push_back(found(*lat, *lon, Precision::postcode));
            }
        }
        return reply;
    }
};

class Google final : public Provider {
public:
    std::string name() const override { return "google"; }
    Precision precision() const override { return Precision::property; }
    std::string default_base() const override { return "https://maps.googleapis.com"; }
    bool needs_key() const override { return true; }

    void plan(const std::vector<GeocodeQuery>& queries, const std::string& base, const std::string& key,
              std::vector<Job>& jobs, const Answer& answer) const override {
        for (std::size_t i = 0; i < queries.size(); ++i) {
            std::string text = address_text(queries[i]);
            if (text.empty()) {
                answer(i, not_found());
                continue;
            }
            jobs.push_back({base + "/maps/api/geocode/json?address=" + url_encode(text) +
                                "&components=country:GB&key=" + url_encode(key),
                            "",
                            {i}});
        }
    }

    Reply read(const Job&, const std::vector<GeocodeQuery>&, const std::string& body) const override {
        auto j = parse_json(body);
        if (!j || !j->is_object() || !(*j)["status"].is_string())
            return Reply::malformed_because("Google answer without a status");
        std::string status = (*j)["status"].get<std::string>();
        std::string message = (*j).value("error_message", "");
        if (status == "ZERO_RESULTS") return {Reply::Kind::answered, {not_found()}, ""};
        if (status == "OVER_QUERY_LIMIT") return {Reply::Kind::rate_limited, {}, "Google OVER_QUERY_LIMIT"};
        if (status == "UNKNOWN_ERROR") return {Reply::Kind::retry, {}, "Google UNKNOWN_ERROR"};
        if (status != "OK")  // REQUEST_DENIED, INVALID_REQUEST: asking again will not help
            return {Reply::Kind::failed, {}, "Google " + status + (message.empty() ? "" : ": " + message)};
        const json& results = (*j)["results"];
        if (!results.is_array() || results.empty()) return Reply::malformed_because("Google OK without results");
        const json& geometry = results[0]["geometry"];
        auto lat = coordinate(geometry["location"], "lat", 90);
        auto lng = coordinate(geometry["location"], "lng", 180);
        if (!lat || !lng) return Reply::malformed_because("Google result without geometry.location");
        // ROOFTOP is a geocode to the building; RANGE_INTERPOLATED, GEOMETRIC_CENTER and
        // APPROXIMATE are somewhere along or around the street.
        Precision p = geometry.value("location_type", "") == "ROOFTOP" ? Precision::property : Precision::street;
        return {Reply::Kind::answered, {found(*lat, *lng, p)}, ""};
    }
};

class Nominatim final : public Provider {
public:
    std::string name() const override { return "nominatim"; }
    Precision precision() const override { return Precision::property; }
    std::string default_base() const override { return "https://nominatim.openstreetmap.org"; }

    void plan(const std::vector<GeocodeQuery>& queries, const std::string& base, const std::string&,
              std::vector<Job>& jobs, const Answer& answer) const override {
        for (std::size_t i = 0; i < queries.size(); ++i) {
            std::string text = address_text(queries[i]);
            if (text.empty()) {
                answer(i, not_found());
                continue;
            }
            jobs.push_back(
                {base + "/search?q=" + url_encode(text) + "&format=jsonv2&countrycodes=gb&limit=1", "", {i}});
        }
    }

    // An OSM object that is a building or an address point locates the property; anything else
    // (a street, a postcode area, a village) only roughly.
    static bool is_property(const json& r) {
        static const char* const kinds[] = {"house",   "building", "apartments",  "detached", "semidetached_house",
                                            "terrace", "bungalow", "residential", "flats"};
        if (r.value("category", "") == "building") return true;
        for (const char* field : {"addresstype", "type"}) {
            std::string value = r.value(field, "");
            if (value == "residential" && std::string(field) == "type" && r.value("category", "") != "building")
                continue;  // landuse=residential is an area, not a house
            for (const char* kind : kinds)
                if (value == kind) return true;
        }
        return false;
    }

    Reply read(const Job&, const std::vector<GeocodeQuery>&, const std::string& body) const override {
        auto j = parse_json(body);
        if (!j || !j->is_array()) return Reply::malformed_because("Nominatim answer is not a JSON array");
        if (j->empty()) return {Reply::Kind::answered, {not_found()}, ""};
        const json& r = (*j)[0];
        auto lat = coordinate(r, "lat", 90);
        auto lon = coordinate(r, "lon", 180);
        if (!lat || !lon) return Reply::malformed_because("Nominatim result without lat/lon");
        return {
            Reply::Kind::answered, {found(*lat, *lon, is_property(r) ? Precision::property : Precision::street)}, ""};
    }
};

class OsPlaces final : public Provider {
public:
    std::string name() const override { return "os-places"; }
    Precision precision() const override { return Precision::property; }
    std::string default_base() const override { return "https://api.os.uk"; }
    bool needs_key() const override { return true; }

    void plan(const std::vector<GeocodeQuery>& queries, const std::string& base, const std::string& key,
              std::vector<Job>& jobs, const Answer& answer) const override {
        std::string tail = "&output_srs=EPSG:4326&key=" + url_encode(key);
        for (std::size_t i = 0; i < queries.size(); ++i) {
            // A UPRN names the property exactly: no matching of free text needed.
            if (queries[i].uprn) {
                jobs.push_back(
                    {base + "/search/places/v1/uprn?uprn=" + std::to_string(*queries[i].uprn) + tail, "", {i}});
                continue;
            }
            std::string text = address_text(queries[i]);
            if (text.empty()) {
                answer(i, not_found());
                continue;
            }
            jobs.push_back(
                {base + "/search/places/v1/find?query=" + url_encode(text) + "&maxresults=1" + tail, "", {i}});
        }
    }

    Reply read(const Job&, const std::vector<GeocodeQuery>&, const std::string& body) const override {
        auto j = parse_json(body);
        if (!j || !j->is_object()) return Reply::malformed_because("OS Places answer is not a JSON object");
        // OS Places leaves the `results` key out altogether when nothing matched.
        if (!j->contains("results")) return {Reply::Kind::answered, {not_found()}, ""};
        const json& results = (*j)["results"];
        if (!results.is_array()) return Reply::malformed_because("OS Places results is not an array");
        if (results.empty()) return {Reply::Kind::answered, {not_found()}, ""};
        const json& dpa = results[0].is_object() ? results[0].value("DPA", json()) : json();
        auto lat = coordinate(dpa, "LAT", 90);
        auto lng = coordinate(dpa, "LNG", 180);
        if (!lat || !lng) return Reply::malformed_because("OS Places result without DPA.LAT/LNG");
        return {Reply::Kind::answered, {found(*lat, *lng, Precision::property)}, ""};
    }
};

// ---------------------------------------------------------------------------------------------
// The engine.

double seconds_between(Clock::time_point from, Clock::time_point to) {
    return std::chrono::duration<double>(to - from).count();
}

Clock::time_point after(Clock::time_point t, double seconds) {
    return t + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
}

// Paces requests to `rate` per second. The bucket holds a single token, so there are no bursts:
// a run that starts with a full bucket must not send more than the provider allows either
// (Nominatim's policy is an absolute maximum of 1/s).
class TokenBucket {
public:
    explicit TokenBucket(double rate) : rate_(rate), last_(Clock::now()) {}
    // Seconds until a token is available; 0 when one is.
    double wait(Clock::time_point now) {
        tokens_ = std::min(1.0, tokens_ + seconds_between(last_, now) * rate_);
        last_ = now;
        return tokens_ >= 1 ? 0 : (1 - tokens_) / rate_;
    }
    void take() { tokens_ -= 1; }

private:
    double rate_;
    double tokens_ = 1;
    Clock::time_point last_;
};

// One request on the wire.
struct Attempt {
    Attempt(std::size_t job, bool probe, const std::string& url, const std::string& user_agent,
            const std::vector<std::string>& headers)
        : job(job), probe(probe), transfer(url, user_agent, headers) {}
    std::size_t job;
    bool probe;  // the one request a half-open circuit lets through
    http::Transfer transfer;
};

// Responses larger than this are not geocoding answers (a batch of 100 postcodes is ~100 KB).
constexpr std::size_t max_response_bytes = 16u << 20;

// curl errors that another attempt cannot fix.
bool permanent(CURLcode code) {
    return code == CURLE_UNSUPPORTED_PROTOCOL || code == CURLE_URL_MALFORMAT || code == CURLE_NOT_BUILT_IN ||
           code == CURLE_FILESIZE_EXCEEDED || code == CURLE_WRITE_ERROR;
}

// One per provider in the chain, used from one thread: geocode() is not reentrant. The token
// bucket, the circuit breaker and curl's connection cache live as long as the object.
class Engine final : public HttpGeocoder {
public:
    Engine(std::unique_ptr<Provider> provider, HttpGeocoderOptions options)
        : provider_(std::move(provider)), options_(std::move(options)),
          base_(options_.base_url.empty() ? provider_->default_base() : options_.base_url),
          bucket_(options_.rate > 0 ? options_.rate : documented_rate(provider_->name())),
          backoff_(options_.backoff_base_seconds, options_.max_backoff_seconds), multi_(http::new_multi()) {
        while (!base_.empty() && base_.back() == '/') base_.pop_back();
        redact_.add(options_.api_key);
    }

    std::string name() const override { return provider_->name(); }
    Precision precision() const override { return provider_->precision(); }
    HttpGeocodeStats geocode(const std::vector<GeocodeQuery>& queries,
                             const std::function<void(std::size_t, const GeocodeResult&)>& done) override;

private:
    enum class Breaker { closed, open, half_open };

    // State of one geocode() call.
    struct Run {
        const std::vector<GeocodeQuery>& queries;
        const std::function<void(std::size_t, const GeocodeResult&)>& done;
        std::vector<Job> jobs;
        std::vector<int> attempts;
        std::deque<std::size_t> fresh;
        using Due = std::pair<Clock::time_point, std::size_t>;
        std::priority_queue<Due, std::vector<Due>, std::greater<>> retry;
        std::map<CURL*, std::unique_ptr<Attempt>> in_flight;
        HttpGeocodeStats stats;
    };

    static void deliver(Run& run, std::size_t query, const GeocodeResult& result);
    void fail_job(Run& run, std::size_t job, const std::string& why);
    void start(Run& run, std::size_t job, bool probe);
    void finish(Run& run, std::unique_ptr<Attempt> attempt, CURLcode code);
    void transfer_failed(Run& run, const Attempt& attempt, CURLcode code);
    void refused(Run& run, const Attempt& attempt, long status);  // a status other than 2xx
    void read_reply(Run& run, const Attempt& attempt);
    void retry_later(Run& run, const Attempt& attempt, const std::string& why, std::optional<double> wait);
    void request_failed(Run& run, bool probe);
    void request_succeeded(bool probe);
    void update_breaker(Run& run, Clock::time_point now);
    double send_what_is_allowed(Run& run, Clock::time_point now);  // returns seconds until more may go
    std::size_t collect(Run& run);                                 // handles finished transfers; returns how many
    void abandon_in_flight(Run& run);
    std::string clean(const std::string& text) const { return redact_(text); }

    std::unique_ptr<Provider> provider_;
    HttpGeocoderOptions options_;
    std::string base_;
    TokenBucket bucket_;
    http::Backoff backoff_;
    http::Redactor redact_;
    http::MultiHandle multi_;
    // These outlive a geocode() call: the caller feeds work in batches, and a server that asked us
    // to wait, or that is down, is no different for the next batch.
    Clock::time_point pause_until_{};
    Breaker breaker_ = Breaker::closed;
    int consecutive_failures_ = 0;
    Clock::time_point open_until_{};
    bool probe_in_flight_ = false;
};

void Engine::deliver(Run& run, std::size_t query, const GeocodeResult& result) {
    switch (result.status) {
        case GeocodeResult::Status::found: ++run.stats.found; break;
        case GeocodeResult::Status::not_found: ++run.stats.not_found; break;
        case GeocodeResult::Status::failed: ++run.stats.failed; break;
    }
    run.done(query, result);
}

void Engine::fail_job(Run& run, std::size_t job, const std::string& why) {
    GeocodeResult failed;
    failed.status = GeocodeResult::Status::failed;
    failed.error = clean(why);
    spdlog::debug("{}: {} quer{} failed: {}", name(), run.jobs[job].queries.size(),
                  run.jobs[job].queries.size() == 1 ? "y" : "ies", failed.error);
    for (std::size_t q : run.jobs[job].queries) deliver(run, q, failed);
}

void Engine::request_failed(Run& run, bool probe) {
    if (breaker_ == Breaker::closed) {
        ++consecutive_failures_;
        if (options_.breaker_failures <= 0 || consecutive_failures_ < options_.breaker_failures) return;
    } else if (!probe) {
        return;  // an answer to a request sent before the circuit opened: the breaker already knows
    }
    if (probe)
        spdlog::warn("{}: probe request failed; circuit open again, nothing sent for {:.1f} s", name(),
                     options_.breaker_open_seconds);
    else
        spdlog::warn("{}: {} consecutive requests failed; circuit open, nothing sent for {:.1f} s", name(),
                     consecutive_failures_, options_.breaker_open_seconds);
    breaker_ = Breaker::open;
    open_until_ = after(Clock::now(), options_.breaker_open_seconds);
    probe_in_flight_ = false;
    run.stats.circuit_opened = true;
}

void Engine::request_succeeded(bool probe) {
    if (breaker_ == Breaker::closed) {
        consecutive_failures_ = 0;
    } else if (probe) {
        breaker_ = Breaker::closed;
        consecutive_failures_ = 0;
        probe_in_flight_ = false;
        spdlog::info("{}: probe request succeeded; circuit closed", name());
    }
}

void Engine::start(Run& run, std::size_t job, bool probe) {
    const Job& j = run.jobs[job];
    std::vector<std::string> headers = {"Accept: application/json"};
    if (!j.body.empty()) headers.emplace_back("Content-Type: application/json");
    auto a = std::make_unique<Attempt>(job, probe, j.url, options_.user_agent, headers);
    a->transfer.keep_body(max_response_bytes, http::BodyBuffer::Overflow::fail);
    if (!j.body.empty()) a->transfer.post(j.body);
    CURL* h = a->transfer.handle();
    curl_easy_setopt(h, CURLOPT_ACCEPT_ENCODING, "");
    auto timeout_ms = static_cast<long>(options_.timeout_seconds * 1000);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, std::min(timeout_ms, 10000L));
    if (curl_multi_add_handle(multi_.get(), h) != CURLM_OK) throw Error(exit_internal, "curl_multi_add_handle failed");
    ++run.attempts[job];
    ++run.stats.requests;
    if (probe) probe_in_flight_ = true;
    spdlog::trace("{}: {} {}{}", name(), j.body.empty() ? "GET" : "POST", clean(j.url), probe ? " (probe)" : "");
    run.in_flight.emplace(h, std::move(a));
}

void Engine::retry_later(Run& run, const Attempt& attempt, const std::string& why, std::optional<double> wait) {
    request_failed(run, attempt.probe);
    int attempts = run.attempts[attempt.job];
    if (attempts >= options_.max_attempts) {
        fail_job(run, attempt.job, why + " (gave up after " + std::to_string(attempts) + " attempts)");
        return;
    }
    double delay = wait ? *wait : backoff_.wait(attempts);
    auto now = Clock::now();
    if (wait) pause_until_ = std::max(pause_until_, after(now, delay));
    ++run.stats.retries;
    run.retry.emplace(after(now, delay), attempt.job);
    spdlog::debug("{}: {}; attempt {} of {} in {:.2f} s", name(), clean(why), attempts + 1, options_.max_attempts,
                  delay);
}

void Engine::finish(Run& run, std::unique_ptr<Attempt> a, CURLcode code) {
    long status = code == CURLE_OK ? a->transfer.status() : 0;
    if (code != CURLE_OK) transfer_failed(run, *a, code);
    else if (status < 200 || status >= 300) refused(run, *a, status);
    else read_reply(run, *a);
}

void Engine::transfer_failed(Run& run, const Attempt& a, CURLcode code) {
    std::string why = name() + ": " + a.transfer.error_text(code);
    if (permanent(code)) {
        request_failed(run, a.probe);
        fail_job(run, a.job, why);
    } else {
        retry_later(run, a, why, std::nullopt);
    }
}

void Engine::refused(Run& run, const Attempt& a, long status) {
    std::string what = name() + ": HTTP " + std::to_string(status);
    if (status == 429 || status == 503) {
        if (status == 429) ++run.stats.http_429;
        auto wait = http::parse_retry_after(a.transfer.headers().retry_after);
        if (wait && *wait > options_.max_retry_after_seconds) {
            auto seconds = [](double s) { return std::to_string(static_cast<long long>(s)); };
            request_failed(run, a.probe);
            fail_job(run, a.job,
                     what + " with Retry-After " + seconds(*wait) + " s, longer than the " +
                         seconds(options_.max_retry_after_seconds) + " s we wait");
            return;
        }
        // A 429 without Retry-After still says "slow down": pause every request, not just this one.
        if (!wait && status == 429) wait = backoff_.wait(run.attempts[a.job]);
        retry_later(run, a, what, wait);
    } else if (status >= 500) {
        retry_later(run, a, what, std::nullopt);
    } else {
        request_failed(run, a.probe);
        fail_job(run, a.job, what + " (not retried)");
    }
}

void Engine::read_reply(Run& run, const Attempt& a) {
    const std::string who = name();
    Reply reply = provider_->read(run.jobs[a.job], run.queries, a.transfer.body());
    switch (reply.kind) {
        case Reply::Kind::answered: {
            request_succeeded(a.probe);
            const auto& qs = run.jobs[a.job].queries;
            for (std::size_t k = 0; k < qs.size() && k < reply.results.size(); ++k)
                deliver(run, qs[k], reply.results[k]);
            return;
        }
        case Reply::Kind::rate_limited:
            ++run.stats.http_429;
            retry_later(run, a, who + ": " + reply.error, backoff_.wait(run.attempts[a.job]));
            return;
        case Reply::Kind::retry: retry_later(run, a, who + ": " + reply.error, std::nullopt); return;
        case Reply::Kind::malformed:
            ++run.stats.malformed;
            request_failed(run, a.probe);
            fail_job(run, a.job, who + ": malformed answer (" + reply.error + ")");
            return;
        case Reply::Kind::failed:
            request_failed(run, a.probe);
            fail_job(run, a.job, who + ": " + reply.error);
            return;
    }
}

std::size_t Engine::collect(Run& run) {
    std::size_t finished = 0;
    int left = 0;
    while (CURLMsg* msg = curl_multi_info_read(multi_.get(), &left)) {
        if (msg->msg != CURLMSG_DONE) continue;
        CURL* handle = msg->easy_handle;
        CURLcode code = msg->data.result;
        curl_multi_remove_handle(multi_.get(), handle);
        auto it = run.in_flight.find(handle);
        if (it == run.in_flight.end()) continue;
        auto attempt = std::move(it->second);
        run.in_flight.erase(it);
        if (attempt->probe) probe_in_flight_ = false;
        ++finished;
        finish(run, std::move(attempt), code);
    }
    return finished;
}

void Engine::abandon_in_flight(Run& run) {
    for (auto& [handle, attempt] : run.in_flight) curl_multi_remove_handle(multi_.get(), handle);
    run.in_flight.clear();
    probe_in_flight_ = false;
}

void Engine::update_breaker(Run& run, Clock::time_point now) {
    if (breaker_ == Breaker::open && now >= open_until_) {
        breaker_ = Breaker::half_open;
        spdlog::info("{}: circuit half-open; sending one probe request", name());
    }
    if (breaker_ != Breaker::open) return;
    // Waiting out the open period would stall the run; these end as failed (a later run retries
    // them), and the server gets no more traffic from us.
    run.stats.circuit_opened = true;
    std::string why = name() + ": circuit open after " + std::to_string(consecutive_failures_) +
                      " consecutive failed requests; not sent";
    for (std::size_t j : run.fresh) fail_job(run, j, why);
    run.fresh.clear();
    for (; !run.retry.empty(); run.retry.pop()) fail_job(run, run.retry.top().second, why);
}

double Engine::send_what_is_allowed(Run& run, Clock::time_point now) {
    const auto max_in_flight = static_cast<std::size_t>(std::max(1, options_.max_in_flight));
    double wait = 1;
    while (run.in_flight.size() < max_in_flight && breaker_ != Breaker::open) {
        if (breaker_ == Breaker::half_open && probe_in_flight_) break;
        bool retry_due = !run.retry.empty() && run.retry.top().first <= now;
        if (!retry_due && run.fresh.empty()) {
            if (!run.retry.empty()) wait = std::min(wait, seconds_between(now, run.retry.top().first));
            break;
        }
        if (now < pause_until_) {
            wait = std::min(wait, seconds_between(now, pause_until_));
            break;
        }
        double token = bucket_.wait(now);
        if (token > 0) {
            wait = std::min(wait, token);
            break;
        }
        bucket_.take();
        std::size_t job = 0;
        if (retry_due) {
            job = run.retry.top().second;
            run.retry.pop();
        } else {
            job = run.fresh.front();
            run.fresh.pop_front();
        }
        start(run, job, breaker_ == Breaker::half_open);
    }
    if (breaker_ == Breaker::open) wait = std::min(wait, seconds_between(now, open_until_));
    return wait;
}

HttpGeocodeStats Engine::geocode(const std::vector<GeocodeQuery>& queries,
                                 const std::function<void(std::size_t, const GeocodeResult&)>& done) {
    const auto started = Clock::now();
    Run run{queries, done, {}, {}, {}, {}, {}, {}};
    provider_->plan(queries, base_, options_.api_key, run.jobs,
                    [&](std::size_t q, const GeocodeResult& r) { deliver(run, q, r); });
    run.attempts.assign(run.jobs.size(), 0);
    for (std::size_t j = 0; j < run.jobs.size(); ++j) run.fresh.push_back(j);

    // The callback may throw: take our handles back out of the multi handle on the way out.
    struct Guard {
        Engine& engine;
        Run& run;
        Guard(const Guard&) = delete;
        Guard& operator=(const Guard&) = delete;
        ~Guard() { engine.abandon_in_flight(run); }
    } guard{*this, run};

    while (true) {
        auto now = Clock::now();
        update_breaker(run, now);
        double wait = send_what_is_allowed(run, now);
        if (run.in_flight.empty() && run.fresh.empty() && run.retry.empty()) break;

        int running = 0;
        curl_multi_perform(multi_.get(), &running);
        // A transfer can complete inside that perform (a fast local server): polling first would
        // leave its answer waiting for the poll timeout.
        if (collect(run) > 0) continue;
        auto wait_ms = static_cast<int>(std::ceil(std::max(0.0, wait) * 1000));
        curl_multi_poll(multi_.get(), nullptr, 0, std::max(1, wait_ms), nullptr);
        curl_multi_perform(multi_.get(), &running);
        collect(run);
    }
    run.stats.seconds = seconds_between(started, Clock::now());
    spdlog::debug(
        "{}: {} queries, {} requests ({} retries, {} rate-limited), {} found, {} not found, {} failed in {:.1f} s",
        name(), queries.size(), run.stats.requests, run.stats.retries, run.stats.http_429, run.stats.found,
        run.stats.not_found, run.stats.failed, run.stats.seconds);
    return run.stats;
}

}  // namespace

std::unique_ptr<HttpGeocoder> make_http_geocoder(const std::string& name, const HttpGeocoderOptions& options) {
    std::unique_ptr<Provider> provider;
    if (name == "postcodes-io") provider = std::make_unique<PostcodesIo>();
    else if (name == "google") provider = std::make_unique<Google>();
    else if (name == "nominatim") provider = std::make_unique<Nominatim>();
    else if (name == "os-places") provider = std::make_unique<OsPlaces>();
    else return nullptr;
    if (provider->needs_key() && options.api_key.empty())
        throw Error(exit_usage, "geocoder " + name + " needs an API key (" +
                                    (name == "google" ? "GOOGLE_API_KEY" : "OS_PLACES_API_KEY") + ")");
    if (options.max_in_flight < 1 || options.max_attempts < 1 || options.rate < 0 || options.timeout_seconds <= 0)
        throw Error(exit_usage, "geocoder " + name +
                                    ": max_in_flight and max_attempts must be at least 1, rate "
                                    "not negative, timeout positive");
    return std::make_unique<Engine>(std::move(provider), options);
}

}  // namespace epc
