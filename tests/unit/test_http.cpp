// The HTTP plumbing the download and the geocoders share (common/http.hpp): Retry-After, backoff,
// URL encoding, redaction, response headers and bodies, and one request against a local server.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <ctime>
#include <set>
#include <string>
#include <thread>

#include <httplib.h>

#include "epc/common/http.hpp"

using namespace epc;
using namespace std::chrono_literals;

namespace {

// Wed, 21 Oct 2015 07:28:00 GMT
const auto kNow = std::chrono::system_clock::from_time_t(1445412480);

}  // namespace

// ---- Retry-After --------------------------------------------------------------------------------

TEST(HttpRetryAfter, DeltaSeconds) {
    EXPECT_EQ(http::parse_retry_after("1", kNow), 1.0);
    EXPECT_EQ(http::parse_retry_after("7"), 7.0);
    EXPECT_EQ(http::parse_retry_after(" 0 ", kNow), 0.0);
    EXPECT_EQ(http::parse_retry_after(" 120\r\n", kNow), 120.0);  // as a header line ends
    EXPECT_EQ(http::parse_retry_after("999999999", kNow), 999999999.0);
    EXPECT_EQ(http::parse_retry_after("99999999999999999999999", kNow), 1e9);  // absurd, but a number
}

TEST(HttpRetryAfter, HttpDates) {
    EXPECT_EQ(http::parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", kNow), 30.0);
    EXPECT_EQ(http::parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", kNow), 0.0);  // in the past: no wait
    // The obsolete forms HTTP still allows: RFC 850 and asctime.
    EXPECT_EQ(http::parse_retry_after("Wednesday, 21-Oct-15 07:29:00 GMT", kNow), 60.0);
    EXPECT_EQ(http::parse_retry_after("Wed Oct 21 07:28:05 2015", kNow), 5.0);
    // Measured from the real clock by default.
    auto later = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now() + 5s);
    char date[64];
    std::strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", std::gmtime(&later));
    auto wait = http::parse_retry_after(date);
    ASSERT_TRUE(wait);
    EXPECT_GE(*wait, 3.0);
    EXPECT_LE(*wait, 6.0);
}

TEST(HttpRetryAfter, GarbageIsNotAWait) {
    for (const char* value : {"", "   ", "soon", "-5", "1.5", "0x10", "12 s", "Wed, 99 Foo 2015 07:28:30 GMT"})
        EXPECT_FALSE(http::parse_retry_after(value, kNow)) << value;
}

// ---- Backoff --------------------------------------------------------------------------------

TEST(HttpBackoff, BoundDoublesUpToTheMaximum) {
    http::Backoff backoff(0.5, 30);
    EXPECT_EQ(backoff.bound(0), 0.5);  // before any failure: as after the first
    EXPECT_EQ(backoff.bound(1), 0.5);
    EXPECT_EQ(backoff.bound(2), 1.0);
    EXPECT_EQ(backoff.bound(3), 2.0);
    EXPECT_EQ(backoff.bound(6), 16.0);
    EXPECT_EQ(backoff.bound(7), 30.0);
    EXPECT_EQ(backoff.bound(5000), 30.0);            // 2^4999 overflows to infinity: still the maximum
    EXPECT_EQ(http::Backoff(-1, 10).bound(3), 0.0);  // never a negative wait
}

TEST(HttpBackoff, WaitsAreJitteredBetweenZeroAndTheBound) {
    http::Backoff backoff(2, 120, /*seed=*/42);
    for (int failures = 1; failures <= 10; ++failures) {
        std::set<double> seen;
        double lowest = 1e9, highest = 0;
        for (int i = 0; i < 200; ++i) {
            double wait = backoff.wait(failures);
            ASSERT_GE(wait, 0.0);
            ASSERT_LE(wait, backoff.bound(failures));
            seen.insert(wait);
            lowest = std::min(lowest, wait);
            highest = std::max(highest, wait);
        }
        // Full jitter: spread over the whole range, not bunched at the bound.
        EXPECT_GT(seen.size(), 190u) << failures;
        EXPECT_LT(lowest, 0.1 * backoff.bound(failures)) << failures;
        EXPECT_GT(highest, 0.9 * backoff.bound(failures)) << failures;
    }
    // The same seed gives the same waits; unseeded generators differ.
    http::Backoff a(1, 10, 7), b(1, 10, 7);
    for (int i = 1; i < 5; ++i) EXPECT_EQ(a.wait(i), b.wait(i));
    EXPECT_EQ(http::Backoff(0, 10).wait(3), 0.0);
}

// ---- URL encoding -------------------------------------------------------------------------------

TEST(HttpUrlEncode, KeepsOnlyUnreservedCharacters) {
    EXPECT_EQ(http::url_encode("AZaz09-._~"), "AZaz09-._~");
    EXPECT_EQ(http::url_encode("a b/c"), "a%20b%2Fc");
    EXPECT_EQ(http::url_encode(":/?#[]@!$&'()*+,;="), "%3A%2F%3F%23%5B%5D%40%21%24%26%27%28%29%2A%2B%2C%3B%3D");
    EXPECT_EQ(http::url_encode("100%"), "100%25");
    EXPECT_EQ(http::url_encode(""), "");
}

TEST(HttpUrlEncode, EncodesEveryByteOfNonAsciiText) {
    EXPECT_EQ(http::url_encode("Ystrad Mynach, Caerffili \xC3\xA2"), "Ystrad%20Mynach%2C%20Caerffili%20%C3%A2");
    EXPECT_EQ(http::url_encode("\xE2\x82\xAC"), "%E2%82%AC");  // the euro sign: three bytes
    EXPECT_EQ(http::url_encode(std::string("a\0b\x7F\xFF", 5)), "a%00b%7F%FF");
}

// ---- Redaction ----------------------------------------------------------------------------------

TEST(HttpRedact, UrlKeepsSchemeHostAndPathOnly) {
    EXPECT_EQ(http::redact_url("https://s3.example.com:9000/bucket/f.zip?X-Amz-Signature=abc&x=1#frag"),
              "https://s3.example.com:9000/bucket/f.zip");
    EXPECT_EQ(http::redact_url("https://user:secret@host/path"), "https://host/path");
    EXPECT_EQ(http::redact_url("https://user:secret@host"), "https://host");
    EXPECT_EQ(http::redact_url("http://host/a@b"), "http://host/a@b");  // an '@' in the path is not user info
    EXPECT_EQ(http::redact_url("http://host"), "http://host");
    EXPECT_EQ(http::redact_url("/login-with-token?token=t0k3n&email=a%40b"), "/login-with-token");
}

TEST(HttpRedact, SecretsAndTheirEncodedForms) {
    http::Redactor redact;
    redact.add("abc");
    EXPECT_EQ(redact("a?key=abc&x=abc"), "a?key=***&x=***");
    const std::string key = "k3y-S3CRET/with+odd=chars";
    redact.add(key);
    EXPECT_EQ(redact("GET /geocode?address=x&key=" + http::url_encode(key)), "GET /geocode?address=x&key=***");
    EXPECT_EQ(redact("the key " + key + " was refused"), "the key *** was refused");
    EXPECT_EQ(redact("nothing secret"), "nothing secret");
}

TEST(HttpRedact, AuthorizationHeaders) {
    http::Redactor redact;
    redact.add("eyJhbGciOiJIUzI1NiJ9.token");
    redact.add("ZW1haWxAZXhhbXBsZS5vcmc6a2V5");  // base64 of email:key, as HTTP Basic sends it
    EXPECT_EQ(redact("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.token"), "Authorization: Bearer ***");
    EXPECT_EQ(redact("server said: bad header 'Authorization: Basic ZW1haWxAZXhhbXBsZS5vcmc6a2V5'"),
              "server said: bad header 'Authorization: Basic ***'");
}

TEST(HttpRedact, PresignedQueryStrings) {
    http::Redactor redact(6);
    const std::string url = "https://s3.example.com/b/f.zip?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Expires=30"
                            "&X-Amz-Credential=AKIAEXAMPLE%2F20240101&X-Amz-Signature=0123456789abcdef";
    redact.add_query_of(url);
    EXPECT_EQ(redact(url), "https://s3.example.com/b/f.zip?***");
    // A server quoting one value on its own.
    EXPECT_EQ(redact("signature 0123456789abcdef does not match"), "signature *** does not match");
    EXPECT_EQ(redact("credential AKIAEXAMPLE%2F20240101 unknown"), "credential *** unknown");
    // Values shorter than the minimum are not secrets: "30" stays.
    EXPECT_EQ(redact("expires in 30 s"), "expires in 30 s");
    redact.add("short");
    EXPECT_EQ(redact("short"), "short");
    redact.add_query_of("https://host/no-query");
    redact.add("");
    EXPECT_EQ(redact("https://host/no-query"), "https://host/no-query");
}

TEST(HttpRedact, AMaskThatContainsTheSecretDoesNotLoop) {
    http::Redactor redact;
    redact.add("*");
    EXPECT_EQ(redact("a*b**c"), "a***b******c");
}

// ---- Response headers and bodies --------------------------------------------------------------

TEST(HttpResponseHeaders, TakesWhatCallersActOnAndForgetsEarlierResponses) {
    http::ResponseHeaders h;
    h.take("HTTP/1.1 100 Continue\r\n");
    h.take("Retry-After: 5\r\n");
    h.take("HTTP/1.1 206 Partial Content\r\n");
    EXPECT_EQ(h.retry_after, "");  // belonged to the previous response
    h.take("content-range:  bytes 100-199/1000 \r\n");
    h.take("Content-Length: 100\r\n");
    h.take("RETRY-AFTER: Wed, 21 Oct 2015 07:28:00 GMT\r\n");
    h.take("X-Other: value\r\n");
    h.take("\r\n");
    EXPECT_EQ(h.content_range, "bytes 100-199/1000");
    EXPECT_EQ(h.content_length, 100u);
    EXPECT_EQ(h.retry_after, "Wed, 21 Oct 2015 07:28:00 GMT");
    h.take("Content-Length: lots\r\n");
    EXPECT_EQ(h.content_length, 100u);  // unreadable: the earlier value stands
}

TEST(HttpBodyBuffer, TruncatesOrFailsAtTheLimit) {
    http::BodyBuffer keep{5, http::BodyBuffer::Overflow::truncate, {}};
    EXPECT_TRUE(keep.append("abc", 3));
    EXPECT_TRUE(keep.append("defg", 4));
    EXPECT_TRUE(keep.append("h", 1));
    EXPECT_EQ(keep.text, "abcde");
    http::BodyBuffer strict{5, http::BodyBuffer::Overflow::fail, {}};
    EXPECT_TRUE(strict.append("abcde", 5));
    EXPECT_FALSE(strict.append("f", 1));
    EXPECT_EQ(strict.text, "abcde");
}

// ---- One request ----------------------------------------------------------------------------

class HttpTransfer : public testing::Test {
protected:
    void SetUp() override {
        for (const char* var : {"http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"}) unsetenv(var);
        server_.Get("/answer", [](const httplib::Request& req, httplib::Response& res) {
            res.set_header("Retry-After", "3");
            res.set_content("agent=" + req.get_header_value("User-Agent") + " accept=" + req.get_header_value("Accept"),
                            "text/plain");
        });
        server_.Post("/echo", [](const httplib::Request& req, httplib::Response& res) {
            res.status = 503;
            res.set_content(req.get_header_value("Content-Type") + " " + req.body, "text/plain");
        });
        port_ = server_.bind_to_any_port("127.0.0.1");
        thread_ = std::thread([this] { server_.listen_after_bind(); });
        while (!server_.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    void TearDown() override {
        server_.stop();
        thread_.join();
    }
    std::string url(const std::string& path) const { return "http://127.0.0.1:" + std::to_string(port_) + path; }

    httplib::Server server_;
    int port_ = 0;
    std::thread thread_;
};

TEST_F(HttpTransfer, CollectsStatusHeadersAndBody) {
    http::Transfer t(url("/answer"), "epc-test/1", {"Accept: text/plain"});
    ASSERT_EQ(t.perform(), CURLE_OK);
    EXPECT_EQ(t.status(), 200);
    EXPECT_EQ(t.headers().retry_after, "3");
    EXPECT_EQ(t.headers().content_length, t.body().size());
    EXPECT_EQ(t.body(), "agent=epc-test/1 accept=text/plain");
}

TEST_F(HttpTransfer, PostsAndDivertsTheBody) {
    http::Transfer t(url("/echo"), "epc-test/1", {"Content-Type: application/json"});
    t.post(R"({"a":1})");
    std::string diverted;
    t.divert_body([&](const char* data, std::size_t n) {
        diverted.append(data, n);
        return true;
    });
    ASSERT_EQ(t.perform(), CURLE_OK);
    EXPECT_EQ(t.status(), 503);
    EXPECT_EQ(diverted, R"(application/json {"a":1})");
    EXPECT_EQ(t.body(), "");
}

TEST_F(HttpTransfer, AFullBufferStopsTheTransfer) {
    http::Transfer t(url("/answer"), "epc-test/1");
    t.keep_body(4, http::BodyBuffer::Overflow::fail);
    CURLcode code = t.perform();
    EXPECT_EQ(code, CURLE_WRITE_ERROR);
    EXPECT_FALSE(t.error_text(code).empty());
}

TEST(HttpTransferErrors, NoServerIsAnErrorWithText) {
    http::Transfer t("http://127.0.0.1:1/", "epc-test/1");
    CURLcode code = t.perform();
    EXPECT_EQ(code, CURLE_COULDNT_CONNECT);
    EXPECT_EQ(t.status(), 0);
    EXPECT_NE(t.error_text(code).find("127.0.0.1"), std::string::npos) << t.error_text(code);
}

TEST(HttpTransferErrors, OnlyHttpAndHttps) {
    http::Transfer t("file:///etc/passwd", "epc-test/1");
    EXPECT_EQ(t.perform(), CURLE_UNSUPPORTED_PROTOCOL);
    EXPECT_EQ(t.body(), "");
}

TEST(HttpHeaderList, HoldsEveryLineInOrder) {
    EXPECT_FALSE(http::header_list({}));
    http::HeaderList list = http::header_list({"A: 1", "B: 2"});
    ASSERT_TRUE(list);
    EXPECT_STREQ(list->data, "A: 1");
    ASSERT_TRUE(list->next);
    EXPECT_STREQ(list->next->data, "B: 2");
    EXPECT_FALSE(list->next->next);
}
