// The geocode stage against a real PostgreSQL with the offline providers (OS Open UPRN and ONSPD
// files written by the test): distinct addresses once, the chain's precedence, the cache, and the
// coordinates reaching production.
#include <gtest/gtest.h>

#include <fstream>
#include <set>

#include <nlohmann/json.hpp>

#include "epc/extract/archive.hpp"
#include "epc/geocode/geocode.hpp"
#include "epc/load/loader.hpp"
#include "epc/publish/publish.hpp"
#include "fixture/fixture.hpp"
#include "support/geocoder_stand_ins.hpp"
#include "support/pg_test.hpp"
#include "support/zip_writer.hpp"

using namespace epc;
using epc::test::TestDatabase;

namespace {

struct Loaded {
    TestDatabase db;
    std::string uprn_file;
    std::string onspd_file;
};

// Loads a fixture, then writes reference files covering about half the UPRNs (property level)
// and half the postcodes (centroids) found in staging, plus an ONSPD row without a location.
void prepare(Loaded& t, const std::string& name) {
    fixture::Options fo;
    fo.rows = 4000;
    fo.files = 4;
    fo.seed = 17;
    fo.hazards = {fixture::Hazard::empty_postcode_uprn, fixture::Hazard::quoted_commas};
    std::string zip = testing::TempDir() + name + ".zip";
    fixture::write_zip(zip, fo);
    ArchiveInfo archive = inspect_archive(zip, {});
    db::Session session = t.db.session();
    load_archive(session, archive, LoadOptions());

    db::Connection c = t.db.connect();
    t.uprn_file = testing::TempDir() + name + "-uprn.csv";
    std::ofstream uprn(t.uprn_file, std::ios::binary);
    uprn << "\xEF\xBB\xBFUPRN,X_COORDINATE,Y_COORDINATE,LATITUDE,LONGITUDE\r\n";  // ships with a BOM
    db::Result u = c.exec("SELECT DISTINCT uprn FROM epc.stage_domestic WHERE uprn IS NOT NULL AND uprn % 2 = 0");
    for (int i = 0; i < u.rows(); ++i) {
        long long v = u.integer(i, 0);
        uprn << v << ",400000,300000," << 51.0 + (v % 1000) / 10000.0 << "," << -1.0 - (v % 997) / 10000.0 << "\r\n";
    }
    t.onspd_file = testing::TempDir() + name + "-onspd.csv";
    std::ofstream onspd(t.onspd_file, std::ios::binary);
    onspd << "pcd,pcd2,pcds,doterm,lat,long\n";
    db::Result p = c.exec("SELECT DISTINCT split_part(address_key, '|', 2) FROM epc.stage_domestic "
                          "WHERE split_part(address_key, '|', 2) <> '' ORDER BY 1");
    for (int i = 0; i < p.rows(); ++i) {
        std::string pc = p.text(i, 0);
        if (i % 3 == 0) continue;  // not in the directory
        if (i % 7 == 0) {
            onspd << pc << "," << pc << "," << pc << ",202001,99.999999,0.000000\n";  // no location
            continue;
        }
        onspd << pc << "," << pc << "," << pc << ",," << 52.0 + i / 100000.0 << "," << -2.0 + i / 100000.0 << "\n";
    }
}

GeocodeSummary run_geocode(Loaded& t, const std::string& chain) {
    GeocodeOptions o;
    o.chain = parse_chain(chain);
    o.batch = 300;
    o.rate = 1000;            // Nominatim's documented limit is one request a second
    o.http.max_attempts = 2;  // a provider that is down fails fast here
    o.http.max_backoff_seconds = 0.05;
    o.http.breaker_open_seconds = 0.2;
    db::Session session = t.db.session();
    return geocode(session, o);
}

}  // namespace

TEST(Geocode, ChainLocatesEachDistinctAddressOnceWithPrecedence) {
    Loaded t;
    prepare(t, "geo-chain");
    GeocodeSummary s = run_geocode(t, "uprn:" + t.uprn_file + ",onspd:" + t.onspd_file);

    // Expectations computed from the reference files the test wrote, independently of the stage.
    db::Connection c = t.db.connect();
    c.exec("CREATE TEMP TABLE want AS SELECT address_key, min(uprn) AS uprn, split_part(address_key, '|', 2) AS pc "
           "FROM epc.stage_domestic WHERE address_key IS NOT NULL GROUP BY address_key");
    const long long distinct = c.exec("SELECT count(*) FROM want").integer(0, 0);
    const long long by_uprn = c.exec("SELECT count(*) FROM want WHERE uprn % 2 = 0").integer(0, 0);
    EXPECT_EQ(s.to_locate, static_cast<std::uint64_t>(distinct));
    EXPECT_EQ(s.sent, s.to_locate);
    EXPECT_EQ(s.found + s.not_found + s.failed, s.sent);
    EXPECT_EQ(s.failed, 0u);
    EXPECT_EQ(s.found_by_provider["uprn"], static_cast<std::uint64_t>(by_uprn));
    EXPECT_GT(s.found_by_provider["onspd"], 0u);
    EXPECT_GT(s.not_found, 0u);
    EXPECT_EQ(t.db.count("SELECT count(*) FROM epc.geocode_cache"), distinct);
    EXPECT_EQ(t.db.count("SELECT count(*) FROM epc.geocode_cache WHERE provider = 'uprn' AND precision = 'property'"),
              by_uprn);
    // A postcode without a location (99.999999) was not taken as one.
    EXPECT_EQ(t.db.count("SELECT count(*) FROM epc.geocode_cache WHERE latitude > 90"), 0);

    // Publish joins the coordinates onto every certificate of a located address.
    db::Session session = t.db.session();
    publish(session);
    EXPECT_EQ(t.db.count("SELECT count(*) FROM epc.domestic_certificates WHERE latitude IS NOT NULL"),
              t.db.count("SELECT count(*) FROM epc.stage_domestic s JOIN epc.geocode_cache g USING (address_key) "
                         "WHERE g.status = 'found'"));
    EXPECT_EQ(t.db.count("SELECT count(*) FROM epc.domestic_certificates d JOIN epc.stage_domestic s USING (cert_key) "
                         "WHERE s.uprn % 2 = 0 AND s.address_key IS NOT NULL AND d.geocode_precision IS NULL"),
              0);
}

TEST(Geocode, SecondRunSendsNothingAndALostBatchIsAskedAgain) {
    Loaded t;
    prepare(t, "geo-cache");
    const std::string chain = "uprn:" + t.uprn_file + ",onspd:" + t.onspd_file;
    GeocodeSummary first = run_geocode(t, chain);
    GeocodeSummary second = run_geocode(t, chain);
    EXPECT_EQ(second.to_locate, 0u);
    EXPECT_EQ(second.sent, 0u);
    // Lose part of the cache, as a crash between batches would: only that part is asked again.
    const long long lost = t.db.count("WITH d AS (DELETE FROM epc.geocode_cache WHERE address_key IN "
                                      "(SELECT address_key FROM epc.geocode_cache ORDER BY address_key LIMIT 123) "
                                      "RETURNING 1) SELECT count(*) FROM d");
    GeocodeSummary third = run_geocode(t, chain);
    EXPECT_EQ(third.sent, static_cast<std::uint64_t>(lost));
    EXPECT_EQ(third.to_locate, static_cast<std::uint64_t>(lost));
    // The reference files were loaded once and reused.
    EXPECT_EQ(t.db.count("SELECT count(*) FROM epc.reference_file"), 2);
}

TEST(Geocode, ChainOptionErrorsAreUsageErrors) {
    for (const char* bad : {"nowhere", "uprn", "uprn:/no/such/file.csv", "postcodes-io,,onspd:x", "google:file"}) {
        try {
            parse_chain(bad);
            FAIL() << bad;
        } catch (const Error& e) {
            EXPECT_EQ(e.code(), exit_usage) << bad;
        }
    }
    auto links = parse_chain("postcodes-io=http://127.0.0.1:9/x,nominatim");
    ASSERT_EQ(links.size(), 2u);
    EXPECT_EQ(links[0].base_url, "http://127.0.0.1:9/x");
    EXPECT_EQ(links[1].provider, "nominatim");
}

TEST(Geocode, OnlyDistinctUncachedPostcodesReachTheHttpGeocoder) {
    Loaded t;
    prepare(t, "geo-http");
    epc::test::GeocoderStandIn postcodes(epc::test::GeocoderStandIn::Kind::postcodes_io);
    db::Connection c = t.db.connect();
    db::Result pcs = c.exec("SELECT DISTINCT split_part(address_key, '|', 2) FROM epc.stage_domestic "
                            "WHERE split_part(address_key, '|', 2) <> '' ORDER BY 1");
    for (int i = 0; i < pcs.rows(); i += 2) postcodes.add(pcs.text(i, 0), 53.0 + i / 1e5, -1.5);
    // UPRNs first: whatever they locate must not be asked of postcodes.io.
    const std::string chain = "uprn:" + t.uprn_file + ",postcodes-io=" + postcodes.base_url();
    GeocodeSummary first = run_geocode(t, chain);

    // What postcodes.io must have been asked: the distinct postcodes of the keys UPRNs did not find.
    const long long expected = c.exec("SELECT count(DISTINCT split_part(address_key, '|', 2)) FROM "
                                      "(SELECT address_key, min(uprn) AS u FROM epc.stage_domestic "
                                      " WHERE address_key IS NOT NULL GROUP BY 1) k "
                                      "WHERE (u IS NULL OR u % 2 = 1) AND split_part(address_key, '|', 2) <> ''")
                                   .integer(0, 0);
    std::set<std::string> asked;
    std::size_t total = 0;
    for (const auto& r : postcodes.records()) {
        const nlohmann::json body = nlohmann::json::parse(r.body);
        for (const auto& pc : body["postcodes"]) asked.insert(pc.get<std::string>());
        total += body["postcodes"].size();
    }
    EXPECT_EQ(static_cast<long long>(asked.size()), expected);
    EXPECT_EQ(total, asked.size()) << "a postcode was asked twice";
    EXPECT_EQ(postcodes.count(), (asked.size() + 99) / 100);  // bulk requests of up to 100
    EXPECT_EQ(first.failed, 0u);
    EXPECT_GT(first.found_by_provider["postcodes-io"], 0u);
    EXPECT_EQ(t.db.count("SELECT count(*) FROM epc.geocode_cache WHERE provider = 'postcodes-io' AND "
                         "precision = 'postcode'"),
              static_cast<long long>(first.found_by_provider["postcodes-io"]));

    // A second run sends nothing at all.
    const std::size_t before = postcodes.count();
    GeocodeSummary second = run_geocode(t, chain);
    EXPECT_EQ(second.sent, 0u);
    EXPECT_EQ(postcodes.count(), before);

    // A provider that is down: failures are not cached as "not found" (neither by address nor by
    // postcode), and no later link answers for it, so the next run asks again.
    c.exec("DELETE FROM epc.geocode_cache WHERE provider IN ('postcodes-io', 'chain')");
    c.exec("DELETE FROM epc.postcode_cache");
    postcodes.always(epc::test::GeocoderStandIn::Fault{epc::test::GeocoderStandIn::Fault::Type::status, 500, "", ""});
    GeocodeSummary down = run_geocode(t, chain);
    EXPECT_GT(down.failed, 0u);
    EXPECT_EQ(down.found + down.failed + down.not_found, down.to_locate);
    EXPECT_EQ(t.db.count("SELECT count(*) FROM epc.geocode_cache WHERE provider = 'postcodes-io'"), 0);
    EXPECT_EQ(t.db.count("SELECT count(*) FROM epc.postcode_cache"), 0);
    postcodes.clear_faults();
    GeocodeSummary recovered = run_geocode(t, chain);
    EXPECT_EQ(recovered.failed, 0u);
    EXPECT_EQ(recovered.found_by_provider["postcodes-io"], first.found_by_provider["postcodes-io"]);
}

namespace {

// Every postcode in the bodies of postcodes.io requests from `from` on, with repeats.
std::vector<std::string> postcodes_asked(const epc::test::GeocoderStandIn& stand_in, std::size_t from = 0) {
    std::vector<std::string> asked;
    const auto records = stand_in.records();
    for (std::size_t i = from; i < records.size(); ++i) {
        const nlohmann::json body = nlohmann::json::parse(records[i].body);
        for (const auto& pc : body["postcodes"]) asked.push_back(pc.get<std::string>());
    }
    return asked;
}

}  // namespace

// A postcode-level service is asked per distinct postcode, not per address, and never again about
// a postcode it answered: new addresses at known postcodes (here: addresses whose cache entries
// are gone, as a new month's would be) are located without a request.
TEST(Geocode, PostcodeLevelServiceIsAskedEachPostcodeOnceEver) {
    Loaded t;
    prepare(t, "geo-postcode-once");
    epc::test::GeocoderStandIn postcodes(epc::test::GeocoderStandIn::Kind::postcodes_io);
    db::Connection c = t.db.connect();
    db::Result pcs = c.exec("SELECT DISTINCT split_part(address_key, '|', 2) FROM epc.stage_domestic "
                            "WHERE split_part(address_key, '|', 2) <> '' ORDER BY 1");
    for (int i = 0; i < pcs.rows(); i += 3) postcodes.add(pcs.text(i, 0), 53.0 + i / 1e5, -1.5);
    const std::string chain = "postcodes-io=" + postcodes.base_url();

    GeocodeSummary first = run_geocode(t, chain);
    const std::vector<std::string> asked = postcodes_asked(postcodes);
    const std::set<std::string> distinct(asked.begin(), asked.end());
    EXPECT_EQ(static_cast<int>(asked.size()), pcs.rows()) << "each postcode once";
    EXPECT_EQ(static_cast<int>(distinct.size()), pcs.rows());
    EXPECT_EQ(first.postcodes_asked, static_cast<std::uint64_t>(pcs.rows()));
    const long long addresses_with_postcode = t.db.count(
        "SELECT count(DISTINCT address_key) FROM epc.stage_domestic WHERE split_part(address_key, '|', 2) <> ''");
    ASSERT_GT(addresses_with_postcode, pcs.rows()) << "the fixture should have several addresses per postcode";
    EXPECT_EQ(t.db.count("SELECT count(*) FROM epc.postcode_cache WHERE provider = 'postcodes-io'"), pcs.rows());
    // Every address at a known postcode carries its postcode's coordinates.
    EXPECT_EQ(t.db.count("SELECT count(*) FROM epc.geocode_cache g JOIN epc.postcode_cache p ON p.postcode = "
                         "split_part(g.address_key, '|', 2) WHERE p.status = 'found' AND (g.status <> 'found' OR "
                         "g.latitude <> p.latitude OR g.precision <> 'postcode')"),
              0);
    EXPECT_EQ(static_cast<long long>(first.found_by_provider["postcodes-io"]),
              t.db.count("SELECT count(*) FROM epc.geocode_cache WHERE provider = 'postcodes-io'"));

    // Addresses new to the cache at postcodes already answered (found or not): no request at all.
    const long long forgotten = t.db.count("WITH d AS (DELETE FROM epc.geocode_cache WHERE address_key IN (SELECT "
                                           "address_key FROM epc.geocode_cache ORDER BY md5(address_key) LIMIT 500) "
                                           "RETURNING 1) SELECT count(*) FROM d");
    const std::size_t before = postcodes.count();
    GeocodeSummary second = run_geocode(t, chain);
    EXPECT_EQ(second.to_locate, static_cast<std::uint64_t>(forgotten));
    EXPECT_EQ(second.postcodes_asked, 0u);
    EXPECT_EQ(postcodes.count(), before);
    EXPECT_EQ(second.found + second.not_found, static_cast<std::uint64_t>(forgotten));

    // A postcode whose "not found" has expired is asked again, once.
    c.exec("UPDATE epc.postcode_cache SET checked_at = now() - interval '100 days' WHERE postcode = "
           "(SELECT min(postcode) FROM epc.postcode_cache WHERE status = 'not_found')");
    c.exec("UPDATE epc.geocode_cache SET checked_at = now() - interval '100 days' WHERE status = 'not_found'");
    run_geocode(t, chain);
    EXPECT_EQ(postcodes_asked(postcodes, before).size(), 1u);
}

// An address-level service is asked per distinct address, once, ever; what an earlier link of the
// chain located is not asked.
TEST(Geocode, AddressLevelServiceIsAskedEachAddressOnceEver) {
    Loaded t;
    prepare(t, "geo-address-once");
    epc::test::GeocoderStandIn nominatim(epc::test::GeocoderStandIn::Kind::nominatim);
    nominatim.add("1", 51.5, -0.1, "house");  // any address with a "1" in it
    const std::string chain = "uprn:" + t.uprn_file + ",nominatim=" + nominatim.base_url();
    GeocodeSummary first = run_geocode(t, chain);
    const long long not_by_uprn = t.db.count(
        "SELECT count(*) FROM (SELECT address_key, min(uprn) AS u FROM epc.stage_domestic WHERE address_key IS NOT "
        "NULL GROUP BY 1) k WHERE u IS NULL OR u % 2 = 1");
    EXPECT_EQ(static_cast<long long>(nominatim.count()), not_by_uprn) << "one request per address not found by UPRN";
    std::set<std::string> queries;
    for (const auto& r : nominatim.records()) queries.insert(r.param("q"));
    EXPECT_EQ(static_cast<long long>(queries.size()), not_by_uprn) << "an address was asked twice";
    EXPECT_GT(first.found_by_provider["nominatim"], 0u);
    EXPECT_GT(first.not_found, 0u);
    EXPECT_EQ(first.found + first.not_found, first.to_locate);

    const std::size_t before = nominatim.count();
    GeocodeSummary second = run_geocode(t, chain);
    EXPECT_EQ(second.to_locate, 0u);
    EXPECT_EQ(nominatim.count(), before);
}

namespace {

// A one-directory legacy archive of keys `keys`: key k lives at "k, Mill Lane" (or "k, Mill Lane
// Annex" when in `moved`), UPRN 1000 + k, postcode AB1 2CD; keys in `changed` get another floor area.
std::string small_release(const std::string& name, const std::vector<int>& keys, const std::set<int>& changed,
                          const std::set<int>& moved) {
    std::string csv =
        "LMK_KEY,ADDRESS,POSTCODE,LODGEMENT_DATE,TRANSACTION_TYPE,TOTAL_FLOOR_AREA,UPRN,LOCAL_AUTHORITY\n";
    for (int k : keys)
        csv += std::to_string(k) + ",\"" + std::to_string(k) + ", Mill Lane" + (moved.count(k) ? " Annex" : "") +
               "\",AB1 2CD,2021-03-01,marketed sale," + std::to_string(changed.count(k) ? 500 + k : 50 + k) + "," +
               (moved.count(k) ? "" : std::to_string(1000 + k)) + ",E06000001\n";
    const std::string path = testing::TempDir() + name + ".zip";
    epc::test::write_zip(path, {{"domestic-E06000001-Hartlepool/certificates.csv", csv},
                                {"domestic-E06000001-Hartlepool/recommendations.csv", "LMK_KEY\n"}});
    return path;
}

void load_small(TestDatabase& db, const std::string& zip) {
    ArchiveInfo archive = inspect_archive(zip, {CertType::domestic, std::nullopt});
    db::Session session = db.session();
    load_archive(session, archive, LoadOptions());
}

}  // namespace

// A later month looks only at the addresses of new and changed certificates and of published ones
// not located yet; a located, unchanged certificate is not looked at even if the cache lost its
// address.
TEST(Geocode, NextMonthLooksOnlyAtNewChangedAndUnlocatedCertificates) {
    Loaded t;
    const std::string uprn_file = testing::TempDir() + "geo-next-uprn.csv";
    {
        std::ofstream uprn(uprn_file);
        uprn << "UPRN,LATITUDE,LONGITUDE\n";
        for (int k = 1; k <= 220; ++k)
            if (k % 3 != 0) uprn << 1000 + k << "," << 51.0 + k / 1000.0 << ",-1.5\n";
    }
    const std::string chain = "uprn:" + uprn_file;
    std::vector<int> a_keys;
    for (int k = 1; k <= 200; ++k) a_keys.push_back(k);
    load_small(t.db, small_release("geo-next-a", a_keys, {}, {}));
    GeocodeSummary first = run_geocode(t, chain);
    EXPECT_EQ(first.to_locate, 200u);
    EXPECT_EQ(first.found, 134u);  // k % 3 != 0
    {
        db::Session session = t.db.session();
        publish(session);
    }

    // Next month: k % 10 gone, k % 7 changed in place, k % 11 moved to a new address without a
    // UPRN, 201..220 new. Key 3 (unchanged, not found) is due to be asked again; key 1 (unchanged,
    // located) lost its cache entry.
    std::vector<int> b_keys;
    std::set<int> changed, moved;
    std::set<int> expected;  // keys whose address must be looked at
    for (int k = 1; k <= 220; ++k) {
        if (k <= 200 && k % 10 == 0) continue;
        b_keys.push_back(k);
        if (k <= 200 && k % 7 == 0) changed.insert(k);
        if (k <= 200 && k % 11 == 0) moved.insert(k);
        if (k > 200 || moved.count(k)) expected.insert(k);
    }
    expected.insert(3);
    load_small(t.db, small_release("geo-next-b", b_keys, changed, moved));
    db::Connection c = t.db.connect();
    c.exec("UPDATE epc.geocode_cache SET checked_at = now() - interval '100 days' WHERE address_key = "
           "(SELECT address_key FROM epc.stage_domestic WHERE cert_key = '3')");
    c.exec("DELETE FROM epc.geocode_cache WHERE address_key = (SELECT address_key FROM epc.stage_domestic WHERE "
           "cert_key = '1')");
    GeocodeSummary second = run_geocode(t, chain);
    EXPECT_EQ(second.to_locate, expected.size());
    EXPECT_EQ(t.db.count("SELECT count(*) FROM epc.geocode_cache WHERE address_key = (SELECT address_key FROM "
                         "epc.stage_domestic WHERE cert_key = '1')"),
              0)
        << "an unchanged, located certificate was looked at";
    // New keys whose UPRN the file knows are located; moved ones have no UPRN, key 3 none it knows.
    std::uint64_t locatable = 0;
    for (int k : expected) locatable += k > 200 && k % 3 != 0;
    EXPECT_EQ(second.found, locatable);
    EXPECT_EQ(second.not_found, expected.size() - locatable);

    db::Session session = t.db.session();
    PublishSummary p = publish(session);
    EXPECT_EQ(p.added, 20u);
    std::set<int> changed_or_moved = changed;
    changed_or_moved.insert(moved.begin(), moved.end());
    EXPECT_EQ(p.changed, changed_or_moved.size());
    // Key 1 keeps the coordinates it was published with.
    EXPECT_EQ(
        t.db.count("SELECT count(*) FROM epc.domestic_certificates WHERE cert_key = '1' AND latitude IS NOT NULL"), 1);
    EXPECT_EQ(t.db.count("SELECT count(*) FROM epc.change_set"), 0);
}

namespace {

// Reference file for the small releases: the UPRNs of keys 1..`last` not divisible by 3.
std::string small_uprn_file(const std::string& name, int last) {
    const std::string path = testing::TempDir() + name + "-uprn.csv";
    std::ofstream uprn(path);
    uprn << "UPRN,LATITUDE,LONGITUDE\n";
    for (int k = 1; k <= last; ++k)
        if (k % 3 != 0) uprn << 1000 + k << "," << 51.0 + k / 1000.0 << ",-1.5\n";
    return path;
}

std::vector<int> keys_up_to(int last) {
    std::vector<int> keys;
    for (int k = 1; k <= last; ++k) keys.push_back(k);
    return keys;
}

void publish_staging(TestDatabase& db) {
    db::Session session = db.session();
    publish(session);
}

}  // namespace

// A monthly run does not read every published certificate that is not located: those whose
// geocoder failed are kept in a list (epc.geocode_retry) and asked again next month, until
// answered; those answered "not found" wait for --geocode-retry-days (see the test above).
TEST(Geocode, AddressesAGeocoderFailedOnAreAskedAgainNextMonth) {
    Loaded t;
    epc::test::GeocoderStandIn postcodes(epc::test::GeocoderStandIn::Kind::postcodes_io);
    const std::string chain = "uprn:" + small_uprn_file("geo-retry", 40) + ",postcodes-io=" + postcodes.base_url();

    // Month 1: postcodes.io is down, so the 10 addresses the UPRN file lacks (k % 3 == 0) fail.
    postcodes.always(epc::test::GeocoderStandIn::Fault{epc::test::GeocoderStandIn::Fault::Type::status, 500, "", ""});
    load_small(t.db, small_release("geo-retry-a", keys_up_to(30), {}, {}));
    GeocodeSummary first = run_geocode(t, chain);
    EXPECT_EQ(first.found, 20u);
    EXPECT_EQ(first.failed, 10u);
    EXPECT_EQ(t.db.count("SELECT count(*) FROM epc.geocode_retry"), 10);
    EXPECT_EQ(t.db.count("SELECT count(*) FROM epc.geocode_cache"), 20) << "a failure was cached as an answer";
    publish_staging(t.db);

    // Month 2: it is back. The failed ones are asked again beside the 3 new certificates; nothing
    // else published is looked at.
    postcodes.clear_faults();
    postcodes.add("AB1 2CD", 53.5, -1.25);
    load_small(t.db, small_release("geo-retry-b", keys_up_to(33), {}, {}));
    GeocodeSummary second = run_geocode(t, chain);
    EXPECT_EQ(second.to_locate, 13u);
    EXPECT_EQ(second.found_by_provider["uprn"], 2u);           // 31 and 32
    EXPECT_EQ(second.found_by_provider["postcodes-io"], 11u);  // the 10 and 33
    EXPECT_EQ(second.failed, 0u);
    EXPECT_EQ(t.db.count("SELECT count(*) FROM epc.geocode_retry"), 0);
    publish_staging(t.db);
    EXPECT_EQ(t.db.count("SELECT count(*) FROM epc.domestic_certificates WHERE latitude IS NULL"), 0);

    // Month 3: the same certificates: nothing to look at.
    load_small(t.db, small_release("geo-retry-c", keys_up_to(33), {}, {}));
    EXPECT_EQ(run_geocode(t, chain).to_locate, 0u);
}

// A release published without its geocode stage leaves certificates nobody looked at: the next
// geocode stage looks at every published certificate not located, not only the changes.
TEST(Geocode, AfterAPublishWithoutGeocodingEveryUnlocatedCertificateIsLookedAt) {
    Loaded t;
    const std::string chain = "uprn:" + small_uprn_file("geo-skipped", 40);
    load_small(t.db, small_release("geo-skipped-a", keys_up_to(30), {}, {}));
    publish_staging(t.db);
    EXPECT_EQ(t.db.count("SELECT count(*) FROM epc.domestic_certificates WHERE latitude IS NULL"), 30);

    load_small(t.db, small_release("geo-skipped-b", keys_up_to(31), {}, {}));
    GeocodeSummary next = run_geocode(t, chain);
    EXPECT_EQ(next.to_locate, 31u);
    EXPECT_EQ(next.found, 21u);
    publish_staging(t.db);
    EXPECT_EQ(t.db.count("SELECT count(*) FROM epc.domestic_certificates WHERE latitude IS NOT NULL"), 21);

    // From then on, only the changes (and what is due again).
    load_small(t.db, small_release("geo-skipped-c", keys_up_to(32), {}, {}));
    EXPECT_EQ(run_geocode(t, chain).to_locate, 1u);
}

// Reference files may list a key twice (ONSPD: a terminated and a live postcode with the same
// display form): one row per key is kept, the first, and files without twins load as they are.
TEST(Geocode, ReferenceFilesWithAKeyTwiceKeepOneRowPerKey) {
    Loaded t;
    const std::string uprn_file = testing::TempDir() + "geo-twins-uprn.csv";
    {
        std::ofstream uprn(uprn_file);
        uprn << "UPRN,LATITUDE,LONGITUDE\n1001,51.1,-1.1\n1002,51.2,-1.2\n1002,59.9,-1.9\n";
    }
    const std::string onspd_file = testing::TempDir() + "geo-twins-onspd.csv";
    {
        std::ofstream onspd(onspd_file);
        onspd << "pcd,pcd2,pcds,doterm,lat,long\nAB1 2CD,AB1 2CD,AB1 2CD,,52.5,-2.5\nAB1 2CD,AB1 2CD,AB1 2CD,"
                 "200001,50.0,-3.0\nZZ9 9ZZ,ZZ9 9ZZ,ZZ9 9ZZ,,53.0,-1.0\n";
    }
    load_small(t.db, small_release("geo-twins", keys_up_to(3), {}, {}));
    GeocodeSummary s = run_geocode(t, "uprn:" + uprn_file + ",onspd:" + onspd_file);
    EXPECT_EQ(t.db.count("SELECT count(*) FROM epc.ref_uprn"), 2);
    EXPECT_EQ(t.db.count("SELECT count(*) FROM epc.ref_postcode"), 2);
    EXPECT_EQ(t.db.scalar("SELECT latitude FROM epc.ref_uprn WHERE key = 1002"), "51.2");
    EXPECT_EQ(t.db.scalar("SELECT latitude FROM epc.ref_postcode WHERE key = 'AB1 2CD'"), "52.5");
    EXPECT_EQ(s.found_by_provider["uprn"], 2u);
    EXPECT_EQ(s.found_by_provider["onspd"], 1u);  // key 3 (UPRN 1003) by its postcode
    // And a file without twins: keyed as it is.
    const std::string unique_file = testing::TempDir() + "geo-twins-uprn-unique.csv";
    {
        std::ofstream uprn(unique_file);
        uprn << "UPRN,LATITUDE,LONGITUDE\n1001,51.1,-1.1\n1002,51.2,-1.2\n1003,51.3,-1.3\n";
    }
    run_geocode(t, "uprn:" + unique_file + ",onspd:" + onspd_file);
    EXPECT_EQ(t.db.count("SELECT count(*) FROM epc.ref_uprn"), 3);
    EXPECT_EQ(t.db.count("SELECT count(*) FROM pg_constraint WHERE conrelid = 'epc.ref_uprn'::regclass AND contype = "
                         "'p'"),
              1);
}
