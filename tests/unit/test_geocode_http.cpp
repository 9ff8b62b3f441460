// HTTP geocoders against in-process stand-ins: each provider's formats, and the engine's manners
// (pacing, Retry-After, backoff, no retries on 4xx, circuit breaker, bounded concurrency, secrets).
#include <gtest/gtest.h>

#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <ctime>
#include <set>
#include <sstream>

#include "epc/common/http.hpp"
#include "epc/common/types.hpp"
#include "epc/geocode/geocoder.hpp"
#include "epc/geocode/http.hpp"
#include "support/geocoder_stand_ins.hpp"

using namespace epc;
using epc::test::GeocoderStandIn;
using Fault = GeocoderStandIn::Fault;
using Status = GeocodeResult::Status;

namespace {

const std::string kKey = "k3y-S3CRET/with+odd=chars";

GeocodeQuery query(const std::string& address, const std::string& postcode = "",
                   std::optional<std::uint64_t> uprn = {}) {
    return {address + "|" + postcode, address, postcode, uprn};
}

// Fast-failing defaults for tests: a quick backoff and a generous rate unless a test says otherwise.
HttpGeocoderOptions options(const GeocoderStandIn& stand_in) {
    HttpGeocoderOptions o;
    o.base_url = stand_in.base_url();
    o.rate = 1000;
    o.backoff_base_seconds = 0.02;
    o.max_backoff_seconds = 0.1;
    o.timeout_seconds = 5;
    o.api_key = kKey;
    return o;
}

struct Outcome {
    std::vector<GeocodeResult> results;
    std::vector<int> calls;  // how often each query was answered (must be exactly once)
    HttpGeocodeStats stats;
};

Outcome run(HttpGeocoder& geocoder, const std::vector<GeocodeQuery>& queries) {
    Outcome out;
    out.results.resize(queries.size());
    out.calls.assign(queries.size(), 0);
    out.stats = geocoder.geocode(queries, [&](std::size_t i, const GeocodeResult& r) {
        out.results.at(i) = r;
        ++out.calls.at(i);
    });
    for (std::size_t i = 0; i < queries.size(); ++i) EXPECT_EQ(out.calls[i], 1) << "query " << i;
    return out;
}

Outcome run(const std::string& provider, const HttpGeocoderOptions& o, const std::vector<GeocodeQuery>& queries) {
    auto geocoder = make_http_geocoder(provider, o);
    EXPECT_TRUE(geocoder);
    return run(*geocoder, queries);
}

double seconds(std::chrono::steady_clock::duration d) { return std::chrono::duration<double>(d).count(); }

std::string postcode(int i) { return "AB" + std::to_string(1 + i / 10) + " " + std::to_string(i % 10) + "CD"; }

}  // namespace

TEST(GeocodeHttp, PostcodesIoBatchesDistinctPostcodes) {
    GeocoderStandIn s(GeocoderStandIn::Kind::postcodes_io);
    for (int i = 0; i < 150; ++i) s.add(postcode(i), 50 + i / 1000.0, -1 - i / 1000.0);  // 150..179 unknown
    std::vector<GeocodeQuery> queries;
    for (int i = 0; i < 250; ++i) queries.push_back(query("", postcode(i % 180)));
    queries.push_back(query("1 No Postcode Road"));  // nothing to ask postcodes.io

    Outcome out = run("postcodes-io", options(s), queries);
    EXPECT_EQ(s.count(), 2u);
    for (const auto& r : s.records()) {
        EXPECT_EQ(r.method, "POST");
        auto body = nlohmann::json::parse(r.body);
        std::set<std::string> distinct(body["postcodes"].begin(), body["postcodes"].end());
        EXPECT_EQ(distinct.size(), body["postcodes"].size());
        EXPECT_LE(distinct.size(), 100u);
    }
    for (int i = 0; i < 250; ++i) {
        int p = i % 180;
        if (p < 150) {
            ASSERT_EQ(out.results[i].status, Status::found) << i;
            EXPECT_DOUBLE_EQ(out.results[i].latitude, 50 + p / 1000.0);
            EXPECT_DOUBLE_EQ(out.results[i].longitude, -1 - p / 1000.0);
            EXPECT_EQ(out.results[i].precision, Precision::postcode);
        } else {
            EXPECT_EQ(out.results[i].status, Status::not_found) << i;
        }
    }
    EXPECT_EQ(out.results[250].status, Status::not_found);
    EXPECT_EQ(out.stats.requests, 2u);
    EXPECT_EQ(out.stats.found, 150u + 70u);  // queries 180..249 reuse postcodes 0..69
    EXPECT_EQ(out.stats.not_found, 30u + 1u);
}

TEST(GeocodeHttp, GoogleFoundNotFoundAndPrecision) {
    GeocoderStandIn s(GeocoderStandIn::Kind::google, kKey);
    s.add("1 High Street", 51.5, -0.12, "ROOFTOP");
    s.add("Mill Lane", 52.1, -1.5, "GEOMETRIC_CENTER");
    Outcome out = run("google", options(s),
                      {query("1 High Street, Townville", "AB1 2CD"), query("3 Mill Lane", "AB1 3CD"),
                       query("Nowhere Farm", "ZZ9 9ZZ"), query("", "")});
    ASSERT_EQ(out.results[0].status, Status::found);
    EXPECT_DOUBLE_EQ(out.results[0].latitude, 51.5);
    EXPECT_DOUBLE_EQ(out.results[0].longitude, -0.12);
    EXPECT_EQ(out.results[0].precision, Precision::property);
    ASSERT_EQ(out.results[1].status, Status::found);
    EXPECT_EQ(out.results[1].precision, Precision::street);
    EXPECT_EQ(out.results[2].status, Status::not_found);
    EXPECT_EQ(out.results[3].status, Status::not_found);
    ASSERT_EQ(s.count(), 3u);  // the empty query costs no request
    auto first = s.records()[0];
    EXPECT_EQ(first.param("address"), "1 High Street, Townville, AB1 2CD");
    EXPECT_EQ(first.param("components"), "country:GB");
    EXPECT_EQ(first.param("key"), kKey);
}

TEST(GeocodeHttp, GoogleStatuses) {
    GeocoderStandIn s(GeocoderStandIn::Kind::google, kKey);
    s.add("High Street", 51.5, -0.12);
    auto o = options(s);
    o.max_in_flight = 1;
    s.fail_next(Fault::google("OVER_QUERY_LIMIT"));
    s.fail_next(Fault::google("UNKNOWN_ERROR"));
    Outcome retried = run("google", o, {query("1 High Street")});
    EXPECT_EQ(retried.results[0].status, Status::found);
    EXPECT_EQ(s.count(), 3u);
    EXPECT_EQ(retried.stats.http_429, 1u);
    EXPECT_EQ(retried.stats.retries, 2u);

    s.fail_next(Fault::google("INVALID_REQUEST"));
    Outcome invalid = run("google", o, {query("1 High Street")});
    EXPECT_EQ(invalid.results[0].status, Status::failed);
    EXPECT_NE(invalid.results[0].error.find("INVALID_REQUEST"), std::string::npos);
    EXPECT_EQ(s.count(), 4u);  // not retried

    o.api_key = "wrong";
    Outcome denied = run("google", o, {query("1 High Street")});
    EXPECT_EQ(denied.results[0].status, Status::failed);
    EXPECT_NE(denied.results[0].error.find("REQUEST_DENIED"), std::string::npos);
    EXPECT_EQ(s.count(), 5u);
}

TEST(GeocodeHttp, NominatimFoundNotFoundAndPrecision) {
    GeocoderStandIn s(GeocoderStandIn::Kind::nominatim);
    s.add("2 Church Road", 53.25, -2.5, "house");
    s.add("Station Road", 53.3, -2.6, "residential");  // a highway=residential way
    Outcome out = run("nominatim", options(s),
                      {query("2 Church Road", "CH1 1AA"), query("9 Station Road"), query("Lost Cottage")});
    ASSERT_EQ(out.results[0].status, Status::found);
    EXPECT_DOUBLE_EQ(out.results[0].latitude, 53.25);  // from a string
    EXPECT_DOUBLE_EQ(out.results[0].longitude, -2.5);
    EXPECT_EQ(out.results[0].precision, Precision::property);
    ASSERT_EQ(out.results[1].status, Status::found);
    EXPECT_EQ(out.results[1].precision, Precision::street);
    EXPECT_EQ(out.results[2].status, Status::not_found);
    auto r = s.records()[0];
    EXPECT_EQ(r.param("q"), "2 Church Road, CH1 1AA");
    EXPECT_EQ(r.param("format"), "jsonv2");
    EXPECT_EQ(r.param("countrycodes"), "gb");
    EXPECT_EQ(r.param("limit"), "1");
    EXPECT_NE(r.user_agent.find("epc-import"), std::string::npos);
}

TEST(GeocodeHttp, OsPlacesFindAndUprn) {
    GeocoderStandIn s(GeocoderStandIn::Kind::os_places, kKey);
    s.add("10 Downing Street", 51.5034, -0.1276);
    s.add("200000000001", 52.0, -1.0);
    Outcome out = run("os-places", options(s),
                      {query("10 Downing Street", "SW1A 2AA"), query("Nowhere", "SW1A 9ZZ"),
                       query("Somewhere", "", 200000000001ull)});
    ASSERT_EQ(out.results[0].status, Status::found);
    EXPECT_DOUBLE_EQ(out.results[0].latitude, 51.5034);
    EXPECT_EQ(out.results[0].precision, Precision::property);
    EXPECT_EQ(out.results[1].status, Status::not_found);
    ASSERT_EQ(out.results[2].status, Status::found);
    EXPECT_DOUBLE_EQ(out.results[2].longitude, -1.0);
    auto records = s.records();
    ASSERT_EQ(records.size(), 3u);
    int uprn_lookups = 0;
    for (const auto& r : records) {
        EXPECT_EQ(r.param("output_srs"), "EPSG:4326");
        EXPECT_EQ(r.param("key"), kKey);
        uprn_lookups += r.path == "/search/places/v1/uprn";
    }
    EXPECT_EQ(uprn_lookups, 1);
}

TEST(GeocodeHttp, RateLimitSpacesRequests) {
    GeocoderStandIn s(GeocoderStandIn::Kind::nominatim);
    s.add("Road", 53, -2);
    auto o = options(s);
    o.rate = 20;
    std::vector<GeocodeQuery> queries;
    for (int i = 0; i < 21; ++i) queries.push_back(query(std::to_string(i) + " Road"));
    run("nominatim", o, queries);
    auto records = s.records();
    ASSERT_EQ(records.size(), 21u);
    double mean = seconds(records.back().at - records.front().at) / 20;
    EXPECT_GE(mean, 0.045);
    EXPECT_LE(mean, 0.2);  // loose: a busy machine only stretches the spacing
}

TEST(GeocodeHttp, RetryAfterIsHonoured) {
    GeocoderStandIn s(GeocoderStandIn::Kind::google, kKey);
    s.add("Road", 53, -2);
    auto o = options(s);
    o.max_in_flight = 4;
    s.fail_next(Fault::status(429, "1"));
    Outcome out = run("google", o, {query("1 Road")});
    EXPECT_EQ(out.results[0].status, Status::found);
    EXPECT_EQ(out.stats.http_429, 1u);
    auto records = s.records();
    ASSERT_EQ(records.size(), 2u);
    EXPECT_GE(seconds(records[1].at - records[0].at), 1.0);

    // Retry-After as an HTTP date. It has whole seconds: three seconds after the start of the
    // current one is more than two after now, so more than one after the request however late in
    // its second that is sent (two ahead could be 0.996 s after a request sent just past a second).
    std::time_t in_three = std::time(nullptr) + 3;
    char date[64];
    std::strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", std::gmtime(&in_three));
    s.fail_next(Fault::status(503, date));
    Outcome dated = run("google", o, {query("1 Road")});
    EXPECT_EQ(dated.results[0].status, Status::found);
    records = s.records();
    ASSERT_EQ(records.size(), 4u);
    EXPECT_GE(seconds(records[3].at - records[2].at), 1.0);

    // Too long a wait fails the request instead of stalling the run.
    o.max_retry_after_seconds = 60;
    s.fail_next(Fault::status(503, "3600"));
    Outcome later = run("google", o, {query("1 Road")});
    EXPECT_EQ(later.results[0].status, Status::failed);
    EXPECT_EQ(s.count(), 5u);
}

TEST(GeocodeHttp, ServerErrorsAreRetriedWithBackoff) {
    GeocoderStandIn s(GeocoderStandIn::Kind::postcodes_io);
    s.add("AB1 2CD", 50, -1);
    s.fail_next(Fault::status(500), 1);
    s.fail_next(Fault::status(502), 1);
    Outcome out = run("postcodes-io", options(s), {query("", "AB1 2CD")});
    EXPECT_EQ(out.results[0].status, Status::found);
    EXPECT_EQ(s.count(), 3u);
    EXPECT_EQ(out.stats.retries, 2u);

    // A connection cut mid-body is retried the same way.
    s.fail_next(Fault::cut());
    Outcome cut = run("postcodes-io", options(s), {query("", "AB1 2CD")});
    EXPECT_EQ(cut.results[0].status, Status::found);
    EXPECT_EQ(s.count(), 5u);

    // Giving up after max_attempts: failed, never not_found.
    auto o = options(s);
    o.max_attempts = 3;
    s.always(Fault::status(503));
    Outcome down = run("postcodes-io", o, {query("", "AB1 2CD")});
    EXPECT_EQ(down.results[0].status, Status::failed);
    EXPECT_EQ(s.count(), 8u);
}

TEST(GeocodeHttp, TimeoutsAreRetried) {
    GeocoderStandIn s(GeocoderStandIn::Kind::nominatim);
    s.add("Road", 53, -2);
    s.set_latency(std::chrono::milliseconds(700));
    auto o = options(s);
    o.timeout_seconds = 0.2;
    o.max_attempts = 2;
    Outcome out = run("nominatim", o, {query("1 Road")});
    EXPECT_EQ(out.results[0].status, Status::failed);
    EXPECT_EQ(s.count(), 2u);
}

TEST(GeocodeHttp, ClientErrorsAreNotRetried) {
    GeocoderStandIn s(GeocoderStandIn::Kind::os_places, kKey);
    s.fail_next(Fault::status(400));
    Outcome out = run("os-places", options(s), {query("1 Road")});
    EXPECT_EQ(out.results[0].status, Status::failed);
    EXPECT_NE(out.results[0].error.find("HTTP 400"), std::string::npos);
    EXPECT_EQ(s.count(), 1u);
    EXPECT_EQ(out.stats.retries, 0u);
}

TEST(GeocodeHttp, MalformedAnswersFailTheirQueries) {
    for (auto kind : {GeocoderStandIn::Kind::postcodes_io, GeocoderStandIn::Kind::google,
                      GeocoderStandIn::Kind::nominatim, GeocoderStandIn::Kind::os_places}) {
        GeocoderStandIn s(kind, kKey);
        s.add("AB1 2CD", 50, -1);
        s.fail_next(Fault::malformed());
        const char* name = kind == GeocoderStandIn::Kind::postcodes_io ? "postcodes-io"
                           : kind == GeocoderStandIn::Kind::google     ? "google"
                           : kind == GeocoderStandIn::Kind::nominatim  ? "nominatim"
                                                                       : "os-places";
        auto o = options(s);
        o.max_in_flight = 1;
        Outcome out = run(name, o, {query("1 Road", "AB1 2CD"), query("2 Road", "AB1 2CD")});
        EXPECT_EQ(out.results[0].status, Status::failed) << name;
        EXPECT_EQ(out.stats.malformed, 1u) << name;
        if (kind == GeocoderStandIn::Kind::postcodes_io) {
            EXPECT_EQ(out.results[1].status, Status::failed) << name;  // same request, same postcode
        } else {
            EXPECT_EQ(out.results[1].status, Status::found) << name;
        }
    }
}

TEST(GeocodeHttp, CircuitBreakerStopsTheHammering) {
    GeocoderStandIn s(GeocoderStandIn::Kind::google, kKey);
    s.add("Road", 53, -2);
    s.always(Fault::status(500));
    auto o = options(s);
    o.max_in_flight = 1;
    o.max_attempts = 1;
    o.breaker_failures = 3;
    o.breaker_open_seconds = 1;
    auto geocoder = make_http_geocoder("google", o);
    std::vector<GeocodeQuery> queries;
    for (int i = 0; i < 10; ++i) queries.push_back(query(std::to_string(i) + " Road"));

    Outcome first = run(*geocoder, queries);
    EXPECT_TRUE(first.stats.circuit_opened);
    EXPECT_EQ(s.count(), 3u);
    EXPECT_EQ(first.stats.failed, 10u);
    for (const auto& r : first.results) EXPECT_EQ(r.status, Status::failed);
    auto opened = s.records().back().at;

    // While open, a further batch sends nothing and fails (not "not found").
    Outcome blocked = run(*geocoder, queries);
    EXPECT_EQ(s.count(), 3u);
    EXPECT_EQ(blocked.stats.failed, 10u);
    EXPECT_NE(blocked.results[0].error.find("circuit open"), std::string::npos);

    // After the open period one probe goes out; it succeeds, so the circuit closes and work resumes.
    s.clear_faults();
    std::this_thread::sleep_for(std::chrono::milliseconds(1100));
    Outcome after = run(*geocoder, queries);
    EXPECT_EQ(after.stats.found, 10u);
    auto records = s.records();
    ASSERT_EQ(records.size(), 13u);
    EXPECT_GE(seconds(records[3].at - opened), 1.0);
}

TEST(GeocodeHttp, FailedProbeReopensTheCircuit) {
    GeocoderStandIn s(GeocoderStandIn::Kind::nominatim);
    s.always(Fault::status(503));
    auto o = options(s);
    o.max_attempts = 1;
    o.breaker_failures = 2;
    o.breaker_open_seconds = 0.3;
    o.max_in_flight = 1;
    auto geocoder = make_http_geocoder("nominatim", o);
    std::vector<GeocodeQuery> queries(5, query("1 Road"));
    run(*geocoder, queries);
    EXPECT_EQ(s.count(), 2u);
    std::this_thread::sleep_for(std::chrono::milliseconds(350));
    Outcome probe = run(*geocoder, queries);
    EXPECT_EQ(s.count(), 3u);  // one probe, it fails, the circuit opens again
    EXPECT_EQ(probe.stats.failed, 5u);
}

TEST(GeocodeHttp, MaxInFlightIsRespected) {
    GeocoderStandIn s(GeocoderStandIn::Kind::google, kKey);
    s.add("Road", 53, -2);
    s.set_latency(std::chrono::milliseconds(100));
    auto o = options(s);
    o.max_in_flight = 3;
    std::vector<GeocodeQuery> queries;
    for (int i = 0; i < 15; ++i) queries.push_back(query(std::to_string(i) + " Road"));
    Outcome out = run("google", o, queries);
    EXPECT_EQ(out.stats.found, 15u);
    EXPECT_EQ(s.max_concurrent(), 3);
}

TEST(GeocodeHttp, ApiKeyNeverLogged) {
    std::ostringstream captured;
    auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(captured);
    auto previous = spdlog::default_logger();
    spdlog::set_default_logger(std::make_shared<spdlog::logger>("capture", sink));
    spdlog::set_level(spdlog::level::trace);

    std::vector<std::string> errors;
    {
        GeocoderStandIn s(GeocoderStandIn::Kind::google, kKey);
        s.fail_next(Fault::status(500));
        s.fail_next(Fault::status(429, "0"));
        s.fail_next(Fault::malformed());
        s.fail_next(Fault::status(403));
        s.fail_next(Fault::google("REQUEST_DENIED"));
        auto o = options(s);
        o.max_in_flight = 1;
        Outcome out = run("google", o,
                          {query("1 Road"), query("2 Road"), query("3 Road"), query("4 Road"), query("5 Road")});
        for (const auto& r : out.results) errors.push_back(r.error);
        EXPECT_GE(s.count(), 3u);
    }
    {
        GeocoderStandIn s(GeocoderStandIn::Kind::os_places, kKey);
        s.always(Fault::status(401));
        auto o = options(s);
        Outcome out = run("os-places", o, {query("1 Road")});
        errors.push_back(out.results[0].error);
    }
    spdlog::set_default_logger(previous);

    std::string log = captured.str();
    EXPECT_NE(log.find("key=***"), std::string::npos) << "no request was logged:\n" << log;
    for (const std::string& secret : {kKey, http::url_encode(kKey)}) {
        EXPECT_EQ(log.find(secret), std::string::npos) << log;
        for (const auto& e : errors) EXPECT_EQ(e.find(secret), std::string::npos) << e;
    }
}

TEST(GeocodeHttp, FactoryAndNames) {
    EXPECT_FALSE(make_http_geocoder("bing", {}));
    EXPECT_THROW(make_http_geocoder("google", {}), Error);  // no API key
    auto p = make_http_geocoder("postcodes-io", {});
    ASSERT_TRUE(p);
    EXPECT_EQ(p->name(), "postcodes-io");
    EXPECT_EQ(p->precision(), Precision::postcode);
    EXPECT_STREQ(precision_name(Precision::street), "street");
    EXPECT_EQ(geocode_http::documented_rate("nominatim"), 1.0);
    EXPECT_EQ(geocode_http::documented_rate("google"), 50.0);
    EXPECT_EQ(geocode_http::documented_rate("os-places"), 10.0);
}

TEST(GeocodeHttp, FastAnswersAreNotLeftWaiting) {
    // An answer that completes inside curl_multi_perform must be picked up at once, not after the
    // engine's poll timeout (1 s).
    GeocoderStandIn s(GeocoderStandIn::Kind::nominatim);
    s.add("Road", 53, -2);
    auto o = options(s);
    o.max_in_flight = 1;
    std::vector<GeocodeQuery> queries;
    for (int i = 0; i < 30; ++i) queries.push_back(query(std::to_string(i) + " Road"));
    Outcome out = run("nominatim", o, queries);
    EXPECT_EQ(out.stats.found, 30u);
    EXPECT_LT(out.stats.seconds, 0.9);
}

TEST(GeocodeHttp, UnreachableServerEndsFailedNotNotFound) {
    HttpGeocoderOptions o;
    {
        GeocoderStandIn gone(GeocoderStandIn::Kind::postcodes_io);
        o = options(gone);
    }  // nothing listens on that port any more
    o.max_attempts = 2;
    Outcome out = run("postcodes-io", o, {query("", "AB1 2CD"), query("", "AB1 3CD")});
    EXPECT_EQ(out.results[0].status, Status::failed);
    EXPECT_EQ(out.results[1].status, Status::failed);
    EXPECT_EQ(out.stats.requests, 2u);  // one batch, tried twice
    EXPECT_EQ(out.stats.retries, 1u);
    EXPECT_NE(out.results[0].error.find("gave up after 2 attempts"), std::string::npos) << out.results[0].error;
}
