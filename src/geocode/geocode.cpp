#include "epc/geocode/geocode.hpp"

#include <strings.h>
#include <sys/stat.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>

#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include "epc/db/copy.hpp"
#include "epc/db/locks.hpp"
#include "epc/db/transaction.hpp"
#include "epc/publish/changes.hpp"
#include "epc/publish/publish.hpp"
#include "epc/transform/csv.hpp"
#include "epc/transform/fields.hpp"

namespace epc {

namespace {

const char* const kHttpProviders[] = {"postcodes-io", "google", "nominatim", "os-places"};

// Addresses or postcodes read from the database per round of an HTTP provider: enough to keep it
// busy, few enough that memory stays small whatever their number.
constexpr int kChunk = 5000;

class FileSource : public io::ByteSourceBase {
public:
    explicit FileSource(const std::string& path) : file_(std::fopen(path.c_str(), "rb")) {
        if (!file_) throw Error(exit_usage, "cannot open geocoder file " + path);
    }
    ~FileSource() override { std::fclose(file_); }
    FileSource(const FileSource&) = delete;
    FileSource& operator=(const FileSource&) = delete;
    int read(char* buffer, int size) override { return static_cast<int>(std::fread(buffer, 1, size, file_)); }

private:
    std::FILE* file_;
};

int find(const std::vector<Field>& header, std::initializer_list<const char*> names) {
    for (const char* name : names)
        for (std::size_t i = 0; i < header.size(); ++i) {
            std::string h(trim(header[i]));
            if (h.size() == std::strlen(name) && strncasecmp(h.c_str(), name, h.size()) == 0)
                return static_cast<int>(i);
        }
    return -1;
}

struct Reference {
    const char* table;     // epc.ref_<name>
    const char* key_type;  // SQL type of the key column
    Precision precision;
};

Reference reference_for(const std::string& provider) {
    if (provider == "uprn") return {"epc.ref_uprn", "bigint", Precision::property};
    return {"epc.ref_postcode", "text", Precision::postcode};
}

// name:size:mtime of a reference file: a changed file is loaded again, the same one never twice.
std::string reference_identity(const std::string& file) {
    struct stat st {};
    if (stat(file.c_str(), &st) != 0) throw Error(exit_usage, "geocoder file " + file + " does not exist");
    return std::filesystem::path(file).filename().string() + ":" + std::to_string(st.st_size) + ":" +
           std::to_string(st.st_mtime);
}

bool reference_is_loaded(db::Connection& db, const ChainLink& link, const std::string& identity) {
    db::Result known = db.exec("SELECT file_identity FROM epc.reference_file WHERE provider = $1", {link.provider});
    return known.rows() == 1 && known.text(0, 0) == identity && db.has_table(reference_for(link.provider).table);
}

// Where the key and the coordinates are in a reference file's header.
struct ReferenceColumns {
    int key, lat, lon;
    int width() const { return std::max({key, lat, lon}) + 1; }
};

ReferenceColumns reference_columns(const std::vector<Field>& header, const ChainLink& link) {
    const bool uprn = link.provider == "uprn";
    const ReferenceColumns c{uprn ? find(header, {"UPRN"}) : find(header, {"pcds", "pcd2", "pcd"}),
                             find(header, {"LATITUDE", "lat"}), find(header, {"LONGITUDE", "long", "lon"})};
    if (c.key < 0 || c.lat < 0 || c.lon < 0)
        throw Error(exit_usage, "geocoder file " + link.file + ": header lacks " +
                                    (uprn ? "UPRN, LATITUDE, LONGITUDE" : "pcds, lat, long") + " columns");
    return c;
}

struct ReferenceCounts {
    std::uint64_t rows = 0, skipped = 0;
};

// Streams the located rows of the file into COPY; rows without a usable location are skipped.
ReferenceCounts copy_reference_rows(CsvReader& reader, const ReferenceColumns& c, bool uprn, db::CopyIn& copy) {
    ReferenceCounts counts;
    std::string buf;
    Record record;
    while (reader.next(record)) {
        if (static_cast<int>(record.fields.size()) < c.width()) {
            ++counts.skipped;
            continue;
        }
        std::string_view k = trim(record.fields[c.key]), la = trim(record.fields[c.lat]),
                         lo = trim(record.fields[c.lon]);
        // ONSPD writes 99.999999 for postcodes without a location.
        if (!is_decimal(la) || !is_decimal(lo) || la == "99.999999" || (uprn && !is_uprn(k)) || k.empty()) {
            ++counts.skipped;
            continue;
        }
        if (uprn) buf.append(k);
        else append_copy_text(buf, canonical_postcode(k));
        buf.append("\t").append(la).append("\t").append(lo).append("\n");
        ++counts.rows;
        if (buf.size() > (1 << 20)) {
            copy.put(buf);
            buf.clear();
        }
    }
    copy.put(buf);
    return counts;
}

// The primary key of a reference table. Terminated and live postcodes can share a display form,
// so ONSPD's rows are made one per key first; but only when the key refuses them: looking for
// twins in OS Open UPRN, which has none, took 12.6 s of 25 M rows.
void key_uniquely(db::Connection& db, const std::string& table) {
    const std::string add_key = "ALTER TABLE " + table + " ADD PRIMARY KEY (key)";
    db.exec("SAVEPOINT reference_key");
    try {
        db.exec(add_key);
        return;
    } catch (const Error&) {
        db.exec("ROLLBACK TO SAVEPOINT reference_key");  // throws in turn if the server is gone
    }
    db.exec("DELETE FROM " + table + " a USING " + table + " b WHERE a.key = b.key AND a.ctid > b.ctid");
    db.exec(add_key);
}

// Loads an offline reference file (OS Open UPRN: UPRN, LATITUDE, LONGITUDE; ONSPD: pcds, lat, long)
// into its table with COPY, unless this very file was loaded before.
void load_reference(db::Connection& db, const ChainLink& link) {
    const std::string identity = reference_identity(link.file);
    if (reference_is_loaded(db, link, identity)) {
        spdlog::info("geocode: {} reference already loaded from {}", link.provider, link.file);
        return;
    }
    spdlog::info("geocode: loading {} reference from {}", link.provider, link.file);
    const auto started = std::chrono::steady_clock::now();
    CsvReader reader(link.file, std::make_unique<FileSource>(link.file));
    Record header;
    if (!reader.next(header)) throw Error(exit_usage, "geocoder file " + link.file + " is empty");
    const ReferenceColumns columns = reference_columns(header.fields, link);
    const Reference ref = reference_for(link.provider);
    const std::string table(ref.table);

    db::Transaction tx(db);
    db.exec("DROP TABLE IF EXISTS " + table);
    db.exec("CREATE TABLE " + table + " (key " + ref.key_type +
            " NOT NULL, latitude double precision NOT NULL, longitude double precision NOT NULL)");
    db::CopyIn copy(db, table, "key, latitude, longitude", db::CopyFormat::text);
    const ReferenceCounts counts = copy_reference_rows(reader, columns, link.provider == "uprn", copy);
    copy.finish();
    key_uniquely(db, table);
    db.exec("INSERT INTO epc.reference_file (provider, file_identity, rows, loaded_at) VALUES ($1, $2, $3, now()) "
            "ON CONFLICT (provider) DO UPDATE SET file_identity = EXCLUDED.file_identity, rows = EXCLUDED.rows, "
            "loaded_at = now()",
            {link.provider, identity, counts.rows});
    tx.commit();
    db.exec("ANALYZE " + table);
    spdlog::info("geocode: {} rows of {} loaded ({} without a location skipped) in {:.1f} s", counts.rows,
                 link.provider, counts.skipped,
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
}

// In a transaction about to write epc.geocode_cache: waits while another type's offline files
// insert into it in bulk (`bulk`: this is such an insert, and waits for every other writer).
void guard_cache_writes(db::Connection& db, bool bulk) {
    db.exec(std::string("SELECT ") + (bulk ? "pg_advisory_xact_lock" : "pg_advisory_xact_lock_shared") + "($1, $2)",
            {db::kLockNamespace, db::kGeocodeCacheLock});
}

// Writes final answers to a permanent cache in batches, each in its own transaction on a
// connection of its own, so a crash loses at most one batch and a re-run asks only for what is
// not cached. One writer per cache: epc.geocode_cache (by address) and epc.postcode_cache.
class CacheWriter {
public:
    // `upsert`: INSERT INTO the cache ... SELECT ... FROM epc_geocode_batch ON CONFLICT ...
    CacheWriter(db::Connection& db, std::size_t batch, const char* upsert) : db_(db), batch_(batch), upsert_(upsert) {
        db_.exec("CREATE TEMP TABLE IF NOT EXISTS epc_geocode_batch (key text, status text, latitude double "
                 "precision, longitude double precision, provider text, precision text) ON COMMIT DELETE ROWS");
    }
    void add(const std::string& key, const GeocodeResult& r, const std::string& provider) {
        append_copy_text(buf_, key);
        if (r.status == GeocodeResult::Status::found) {
            char coords[80];
            std::snprintf(coords, sizeof coords, "\tfound\t%.7f\t%.7f\t", r.latitude, r.longitude);
            buf_ += coords;
            append_copy_text(buf_, provider);
            buf_ += '\t';
            buf_ += precision_name(r.precision);
        } else {
            buf_ += "\tnot_found\t\\N\t\\N\t";
            append_copy_text(buf_, provider);
            buf_ += "\t\\N";
        }
        buf_ += '\n';
        if (++pending_ >= batch_) flush();
    }
    void flush() {
        if (pending_ == 0) return;
        db::Transaction tx(db_);
        guard_cache_writes(db_, false);
        db::CopyIn copy(db_, "epc_geocode_batch", "key, status, latitude, longitude, provider, precision",
                        db::CopyFormat::text);
        copy.put(buf_);
        copy.finish();
        db_.exec(upsert_);
        tx.commit();
        buf_.clear();
        pending_ = 0;
    }

private:
    db::Connection& db_;
    std::size_t batch_;
    const char* upsert_;
    std::string buf_;
    std::size_t pending_ = 0;
};

const char* const kAddressCache =
    "INSERT INTO epc.geocode_cache (address_key, status, latitude, longitude, provider, precision, checked_at) "
    "SELECT DISTINCT ON (key) key, status, latitude, longitude, provider, precision, now() FROM epc_geocode_batch "
    "ON CONFLICT (address_key) DO UPDATE SET status = EXCLUDED.status, latitude = EXCLUDED.latitude, "
    "longitude = EXCLUDED.longitude, provider = EXCLUDED.provider, precision = EXCLUDED.precision, "
    "checked_at = EXCLUDED.checked_at";
const char* const kPostcodeCache =
    "INSERT INTO epc.postcode_cache (provider, postcode, status, latitude, longitude, checked_at) "
    "SELECT DISTINCT ON (provider, key) provider, key, status, latitude, longitude, now() FROM epc_geocode_batch "
    "ON CONFLICT (provider, postcode) DO UPDATE SET status = EXCLUDED.status, latitude = EXCLUDED.latitude, "
    "longitude = EXCLUDED.longitude, checked_at = EXCLUDED.checked_at";

// A cached "not found" is an answer until it is --geocode-retry-days old; "found" is for ever.
// `alias`: the cache table's alias; $1 is the number of days.
std::string answered_by(const std::string& alias) {
    return "(" + alias + ".status = 'found' OR " + alias + ".checked_at > now() - make_interval(days => $1))";
}

// Its negation, a cached not-found due to be asked again, in the words of the cache's index of its
// not-founds (geocode_cache_not_found), which finds them without reading the cache.
std::string due_again(const std::string& alias) {
    return "(" + alias + ".status <> 'found' AND " + alias + ".checked_at <= now() - make_interval(days => $1))";
}

}  // namespace

std::vector<ChainLink> parse_chain(const std::string& chain) {
    std::vector<ChainLink> links;
    std::size_t start = 0;
    while (start <= chain.size()) {
        std::size_t comma = chain.find(',', start);
        std::string item = chain.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
        start = comma == std::string::npos ? chain.size() + 1 : comma + 1;
        if (item.empty()) throw Error(exit_usage, "--geocoder '" + chain + "' has an empty entry");
        ChainLink link;
        std::size_t colon = item.find(':');
        std::size_t equals = item.find('=');
        if (colon != std::string::npos && (equals == std::string::npos || colon < equals)) {
            link.provider = item.substr(0, colon);
            link.file = item.substr(colon + 1);
            if (link.provider != "uprn" && link.provider != "onspd")
                throw Error(exit_usage,
                            "--geocoder: '" + link.provider + "' takes no file (only uprn:FILE and onspd:FILE do)");
            if (link.file.empty() || !std::filesystem::is_regular_file(link.file))
                throw Error(exit_usage, "--geocoder: " + link.provider + " file '" + link.file + "' does not exist");
        } else {
            link.provider = item.substr(0, equals);
            if (equals != std::string::npos) link.base_url = item.substr(equals + 1);
            bool known = false;
            for (const char* name : kHttpProviders) known = known || link.provider == name;
            if (link.provider == "uprn" || link.provider == "onspd")
                throw Error(exit_usage, "--geocoder: " + link.provider + " needs a file: " + link.provider + ":FILE");
            if (!known)
                throw Error(exit_usage,
                            "--geocoder: unknown provider '" + link.provider +
                                "' (known: uprn:FILE, onspd:FILE, postcodes-io, google, nominatim, os-places)");
        }
        links.push_back(link);
    }
    return links;
}

namespace {

// The run whose staging is to be located: it must have finished loading.
long long staged_run(db::Session& session) {
    const std::optional<db::StagingOwner> owner = session.staging_owner();
    if (!owner || (owner->status != db::RunStatus::loaded && owner->status != db::RunStatus::published))
        throw Error(exit_usage, "nothing to geocode for " + std::string(cert_type_name(session.type())) +
                                    ": no completely loaded run in staging (run 'load' first)");
    return owner->run_id;
}

// One HTTP client per HTTP link of the chain (nullptr for offline links), with its API key.
std::vector<std::unique_ptr<HttpGeocoder>> make_http_geocoders(const GeocodeOptions& options) {
    std::vector<std::unique_ptr<HttpGeocoder>> http(options.chain.size());
    for (std::size_t i = 0; i < options.chain.size(); ++i) {
        const ChainLink& link = options.chain[i];
        if (!link.file.empty()) continue;
        HttpGeocoderOptions ho = options.http;
        ho.base_url = link.base_url;
        ho.rate = options.rate;
        const char* key_var = link.provider == "google"      ? "GOOGLE_API_KEY"
                              : link.provider == "os-places" ? "OS_PLACES_API_KEY"
                                                             : nullptr;
        if (key_var) {
            const char* key = std::getenv(key_var);
            if (!key || !*key)
                throw Error(exit_usage, "--geocoder " + link.provider + " needs the " + key_var + " variable");
            ho.api_key = key;
        }
        http[i] = make_http_geocoder(link.provider, ho);
        if (!http[i]) throw Error(exit_usage, "geocoder " + link.provider + " is not available");
    }
    return http;
}

// The certificates whose addresses the stage looks at: a query giving address_key, address, uprn.
struct Candidates {
    std::string query;
    bool whole_release;  // every certificate (or a large share): not few enough to probe the cache one by one
};

// Keeps addresses a provider failed on (a SELECT of address keys follows) for the next run.
const char* const kKeepForRetry = "INSERT INTO epc.geocode_retry (address_key)";

// Walks the chain link by link over epc_geocode_todo: each link takes what it locates out of it,
// and a transient failure takes the address out too (a later, coarser provider must not answer
// for a better one that was merely down); what is left at the end is cached as not found. Each
// provider is asked at its own precision: offline files in one join, postcode-level web services
// once per distinct postcode ever (epc.postcode_cache), address-level ones per address.
class ChainWalk {
public:
    ChainWalk(db::Session& session, const GeocodeOptions& options, std::vector<std::unique_ptr<HttpGeocoder>>& http,
              GeocodeSummary& summary)
        : db_(session.connect("geocode")), writer_db_(session.connect("geocode writer")), options_(options),
          http_(http), summary_(summary) {
        // The todo list is a temporary table of up to millions of rows: in the default 8 MB of
        // local buffers every join with it would go through the disk. Only settable before the
        // connection's first temporary table, hence a connection of its own.
        db_.exec("SET temp_buffers = '512MB'");
        db_.exec("SET work_mem = '256MB'");
        db_.exec("SET jit = off");
    }

    void locate(const Candidates& candidates) {
        const long long cached_before = cache_size_estimate();
        find_addresses_to_locate(candidates);
        summary_.sent = summary_.to_locate;
        const std::vector<ChainLink>& chain = options_.chain;
        // Counted again after each link (only): the list just made is to_locate long (28 M rows' first
        // release: 18.7 M, 2.3 s to count).
        for (std::size_t l = 0; l < chain.size() && (l == 0 ? summary_.to_locate : left()) > 0;) {
            if (!chain[l].file.empty()) {
                std::vector<const ChainLink*> files;
                for (; l < chain.size() && !chain[l].file.empty(); ++l) files.push_back(&chain[l]);
                look_up_references(files, l == chain.size());
                continue;
            }
            if (http_[l]->precision() == Precision::postcode) ask_by_postcode(chain[l], *http_[l]);
            else ask_by_address(chain[l], *http_[l]);
            ++l;
        }
        cache_the_rest_as_not_found();
        // Failures of earlier runs that this one answered are failures no more.
        db_.exec("DELETE FROM epc.geocode_retry r USING epc.geocode_cache c WHERE c.address_key = r.address_key AND " +
                     answered_by("c"),
                 {options_.retry_not_found_days});
        analyze_a_grown_cache(cached_before);
    }

private:
    // epc_geocode_todo: the distinct address keys among the candidates (a query giving address_key,
    // address, uprn) that the cache does not answer, with what providers ask by. The cache is
    // probed per row before grouping, so known addresses are never grouped. Keys are compared and
    // grouped in byte order (COLLATE "C", the cache's): a sort in the database's collation compares
    // with strcoll and without abbreviated keys, several times slower.
    void find_addresses_to_locate(const Candidates& candidates) {
        db::Transaction tx(db_);
        std::string rows = "SELECT x.address_key COLLATE \"C\" AS address_key, x.address, x.uprn FROM (" +
                           candidates.query + ") x WHERE x.address_key IS NOT NULL";
        if (!candidates.whole_release) {
            // A few percent of the release: probed one by one in the cache's order, they read its
            // index and heap forward. Hashing the whole cache instead read 18.7 M rows at 28 M
            // (12.5 s); probes in the candidates' order read random pages of it (~14 s).
            rows += " ORDER BY 1";
            db_.exec("SET LOCAL random_page_cost = 1.1");
        }
        summary_.to_locate =
            db_.exec("CREATE TEMP TABLE epc_geocode_todo AS SELECT s.address_key, min(s.address COLLATE \"C\") AS "
                     "address, min(s.uprn) AS uprn, split_part(s.address_key, '|', 2) AS postcode FROM (" +
                         rows +
                         ") s WHERE NOT EXISTS (SELECT 1 FROM epc.geocode_cache c WHERE c.address_key = "
                         "s.address_key AND " +
                         answered_by("c") + ") GROUP BY s.address_key",
                     {options_.retry_not_found_days})
                .affected();
        tx.commit();
        db_.exec("ANALYZE epc_geocode_todo");
        spdlog::info("geocode: {} distinct addresses of this release are not in the cache yet", summary_.to_locate);
    }

    long long cache_size_estimate() {
        return db_.exec("SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = 'epc.geocode_cache'::regclass")
            .integer(0, 0);
    }

    // Publish joins the cache next: planned on the statistics of a cache a tenth its size (the
    // first release's 18.7 M answers, before autovacuum's ANALYZE came), that join spread its hash
    // over 512 batches on disk.
    void analyze_a_grown_cache(long long cached_before) {
        if (summary_.found + summary_.not_found > static_cast<std::uint64_t>(cached_before / 10))
            db_.exec("ANALYZE epc.geocode_cache");
    }

    // Web services read the todo list in key order, a chunk at a time.
    void index_todo() {
        db_.exec("CREATE UNIQUE INDEX IF NOT EXISTS epc_geocode_todo_key ON epc_geocode_todo (address_key)");
    }

    std::uint64_t left() {
        return static_cast<std::uint64_t>(db_.exec("SELECT count(*) FROM epc_geocode_todo").integer(0, 0));
    }

    // Moves the addresses `matches` finds (a SELECT over epc_geocode_todo t giving address_key,
    // latitude and longitude; `matched`: its FROM and WHERE for the DELETE) into the address cache as
    // found by `provider`, in one transaction.
    void take_found(const std::string& provider, Precision precision, const std::string& matches,
                    const std::string& using_where, const db::Params& params = {}) {
        db::Transaction tx(db_);
        guard_cache_writes(db_, false);
        const std::uint64_t found =
            db_.exec(
                   "INSERT INTO epc.geocode_cache (address_key, status, latitude, longitude, provider, precision, "
                   "checked_at) SELECT m.address_key, 'found', m.latitude, m.longitude, '" +
                       provider + "', '" + precision_name(precision) + "', now() FROM (" + matches +
                       ") m ORDER BY m.address_key ON CONFLICT (address_key) DO UPDATE SET status = EXCLUDED.status, latitude = EXCLUDED.latitude, "
                       "longitude = EXCLUDED.longitude, provider = EXCLUDED.provider, precision = EXCLUDED.precision, "
                       "checked_at = EXCLUDED.checked_at",
                   params)
                .affected();
        db_.exec("DELETE FROM epc_geocode_todo t USING " + using_where, params);
        tx.commit();
        summary_.found += found;
        summary_.found_by_provider[provider] += found;
    }

    // Consecutive offline files: one pass over the todo list, with a left join per file; an
    // address takes the first file that knows it. When the files end the chain, the addresses none
    // of them knows are cached as not found in the same pass.
    void look_up_references(const std::vector<const ChainLink*>& files, bool end_the_chain) {
        std::string joins, known_to_any, in_any, latitude, longitude, provider = "CASE", precision = "CASE";
        for (std::size_t i = 0; i < files.size(); ++i) {
            const Reference ref = reference_for(files[i]->provider);
            const std::string r = "r" + std::to_string(i);
            const std::string match = r + ".key = " + (files[i]->provider == "uprn" ? "t.uprn" : "t.postcode");
            joins += std::string(" LEFT JOIN ") + ref.table + " " + r + " ON " + match;
            in_any += std::string(i ? " OR " : "") + "EXISTS (SELECT 1 FROM " + ref.table + " " + r + " WHERE " +
                      match + ")";
            known_to_any += (i ? " OR " : "") + r + ".key IS NOT NULL";
            latitude += r + ".latitude, ";
            longitude += r + ".longitude, ";
            provider += " WHEN " + r + ".key IS NOT NULL THEN '" + files[i]->provider + "'";
            precision += " WHEN " + r + ".key IS NOT NULL THEN '" + precision_name(ref.precision) + "'";
        }
        db::Transaction tx(db_);
        // The addresses the cache has already are not-founds due again: their old answers go first,
        // so the new ones go in without ON CONFLICT, which took 44 % longer (117 s for the 28 M
        // bench's first release). No other writer can add one meanwhile.
        guard_cache_writes(db_, true);
        db_.exec("DELETE FROM epc.geocode_cache c USING epc_geocode_todo t WHERE c.address_key = t.address_key AND "
                 "c.status <> 'found'" +  // what the cache has of the list: only not-founds (its own index)
                 (end_the_chain ? "" : " AND (" + in_any + ")"));
        db::Result by_provider = db_.exec(
            "WITH cached AS (INSERT INTO epc.geocode_cache (address_key, status, latitude, longitude, provider, "
            "precision, checked_at) SELECT t.address_key, CASE WHEN " +
            known_to_any + " THEN 'found' ELSE 'not_found' END, coalesce(" + latitude + "NULL), coalesce(" + longitude +
            "NULL), " + provider + " ELSE 'chain' END, " + precision + " END, now() FROM epc_geocode_todo t" + joins +
            (end_the_chain ? "" : " WHERE " + known_to_any) +
            // In key order: the cache's index then grows at its right edge instead of splitting pages
            // all over.
            " ORDER BY t.address_key RETURNING status, provider) SELECT provider, count(*) FROM cached GROUP BY "
            "provider");
        if (end_the_chain) db_.exec("TRUNCATE epc_geocode_todo");
        else db_.exec("DELETE FROM epc_geocode_todo t WHERE " + in_any);
        tx.commit();
        for (int i = 0; i < by_provider.rows(); ++i) {
            const std::string name = by_provider.text(i, 0);
            const auto count = static_cast<std::uint64_t>(by_provider.integer(i, 1));
            if (name == "chain") {
                summary_.not_found += count;
                continue;
            }
            summary_.found += count;
            summary_.found_by_provider[name] += count;
        }
    }

    // A postcode-level web service: the distinct postcodes of the todo list it has not answered
    // yet are asked once each; then its answers, old and new, are applied to the addresses.
    void ask_by_postcode(const ChainLink& link, HttpGeocoder& geocoder) {
        const db::Params days_and_provider{options_.retry_not_found_days, link.provider};
        const std::string unanswered = "NOT EXISTS (SELECT 1 FROM epc.postcode_cache c WHERE c.provider = $2 AND "
                                       "c.postcode = t.postcode AND " +
                                       answered_by("c") + ")";
        db_.exec("CREATE TEMP TABLE epc_geocode_postcodes AS SELECT DISTINCT t.postcode FROM epc_geocode_todo t "
                 "WHERE t.postcode <> '' AND " +
                     unanswered,
                 days_and_provider);
        db_.exec("CREATE UNIQUE INDEX ON epc_geocode_postcodes (postcode)");  // read in order, a chunk at a time
        CacheWriter writer(writer_db_, options_.batch, kPostcodeCache);
        std::uint64_t asked = 0;
        in_key_order("postcode", "epc_geocode_postcodes", "postcode", [&](const db::Result& chunk) {
            std::vector<GeocodeQuery> queries(static_cast<std::size_t>(chunk.rows()));
            for (int i = 0; i < chunk.rows(); ++i) {
                GeocodeQuery& q = queries[static_cast<std::size_t>(i)];
                q.key = q.postcode = chunk.text(i, 0);
            }
            asked += queries.size();
            count(geocoder.geocode(queries, [&](std::size_t k, const GeocodeResult& r) {
                if (r.status != GeocodeResult::Status::failed) writer.add(queries[k].key, r, link.provider);
            }));
        });
        writer.flush();
        db_.exec("DROP TABLE epc_geocode_postcodes");
        summary_.postcodes_asked += asked;
        spdlog::info("geocode: {}: {} postcodes asked (each once, ever)", link.provider, asked);

        const std::string join =
            "epc.postcode_cache c WHERE c.provider = $1 AND c.postcode = t.postcode AND c.status = 'found'";
        take_found(link.provider, geocoder.precision(),
                   "SELECT t.address_key, c.latitude, c.longitude FROM epc_geocode_todo t, " + join, join,
                   {link.provider});
        // Postcodes asked but still unanswered: the service failed on them.
        summary_.failed += static_cast<std::uint64_t>(
            db_.exec("WITH failed AS (DELETE FROM epc_geocode_todo t WHERE t.postcode <> '' AND " + unanswered +
                         " RETURNING t.address_key), kept AS (" + kKeepForRetry +
                         " SELECT address_key FROM failed ON CONFLICT DO NOTHING) SELECT count(*) FROM failed",
                     days_and_provider)
                .integer(0, 0));
    }

    // An address-level web service: the todo list in key order, a chunk at a time.
    void ask_by_address(const ChainLink& link, HttpGeocoder& geocoder) {
        index_todo();
        CacheWriter writer(writer_db_, options_.batch, kAddressCache);
        in_key_order("address_key, coalesce(address, ''), uprn, postcode", "epc_geocode_todo", "address_key",
                     [&](const db::Result& chunk) {
                         std::vector<GeocodeQuery> queries(static_cast<std::size_t>(chunk.rows()));
                         for (int i = 0; i < chunk.rows(); ++i) {
                             GeocodeQuery& q = queries[static_cast<std::size_t>(i)];
                             q.key = chunk.text(i, 0);
                             q.address = chunk.text(i, 1);
                             if (!chunk.is_null(i, 2)) q.uprn = static_cast<std::uint64_t>(chunk.integer(i, 2));
                             q.postcode = chunk.text(i, 3);
                         }
                         std::string answered = "{", failed = "{";  // both out of the todo list
                         count(geocoder.geocode(queries, [&](std::size_t k, const GeocodeResult& r) {
                             if (r.status == GeocodeResult::Status::not_found) return;
                             if (r.status == GeocodeResult::Status::found) {
                                 writer.add(queries[k].key, r, link.provider);
                                 ++summary_.found;
                                 ++summary_.found_by_provider[link.provider];
                             } else {
                                 ++summary_.failed;
                                 failed += (failed.size() > 1 ? ",\"" : "\"") + queries[k].key + "\"";
                             }
                             // Address keys hold letters, digits, spaces and '|' only: safe in a quoted element.
                             answered += (answered.size() > 1 ? ",\"" : "\"") + queries[k].key + "\"";
                         }));
                         writer.flush();
                         db_.exec(std::string(kKeepForRetry) + " SELECT unnest($1::text[]) ON CONFLICT DO NOTHING",
                                  {failed + "}"});
                         db_.exec("DELETE FROM epc_geocode_todo WHERE address_key = ANY($1::text[])", {answered + "}"});
                     });
    }

    // Reads `table` in the order of its indexed `key` (the first of `columns`), kChunk rows at a
    // time, handing each chunk to `handle`, which may delete rows it has dealt with.
    void in_key_order(const std::string& columns, const std::string& table, const std::string& key,
                      const std::function<void(const db::Result&)>& handle) {
        for (std::string after;;) {
            db::Result chunk = db_.exec("SELECT " + columns + " FROM " + table + " WHERE " + key + " > $1 ORDER BY " +
                                            key + " LIMIT " + std::to_string(kChunk),
                                        {after});
            if (chunk.rows() == 0) return;
            after = chunk.text(chunk.rows() - 1, 0);
            handle(chunk);
        }
    }

    void count(const HttpGeocodeStats& stats) {
        summary_.http_requests += stats.requests;
        summary_.http_429 += stats.http_429;
    }

    void cache_the_rest_as_not_found() {
        db::Transaction tx(db_);
        guard_cache_writes(db_, false);
        summary_.not_found +=
            db_.exec("INSERT INTO epc.geocode_cache (address_key, status, provider, checked_at) SELECT address_key, "
                     "'not_found', 'chain', now() FROM epc_geocode_todo ON CONFLICT (address_key) DO UPDATE SET "
                     "status = EXCLUDED.status, latitude = NULL, longitude = NULL, provider = EXCLUDED.provider, "
                     "precision = NULL, checked_at = EXCLUDED.checked_at")
                .affected();
        tx.commit();
    }

    db::Connection db_;  // holds the temporary tables
    db::Connection writer_db_;
    const GeocodeOptions& options_;
    std::vector<std::unique_ptr<HttpGeocoder>>& http_;
    GeocodeSummary& summary_;
};

// Whether every certificate production holds was looked at by a geocode stage that kept its
// transient failures in epc.geocode_retry: then each unlocated one has its answer in the cache or
// its address in that list. True when the run production holds recorded `retries_kept` (its
// geocode stage ran to its end, after those of the runs before it, by induction); false after a
// run published without its geocode stage, or by an importer from before the list.
bool published_ones_accounted_for(db::Session& session) {
    return session.db()
        .exec("SELECT coalesce(bool_or((geocode ->> 'retries_kept')::boolean), false) FROM epc.import_run WHERE "
              "run_id = (SELECT max(run_id) FROM epc.import_run WHERE cert_type = $1 AND status = $2)",
              {cert_type_name(session.type()), db::run_status_name(db::RunStatus::published)})
        .boolean(0, 0);
}

// Where the addresses to locate come from. The first release: every certificate of staging.
// Later: the new and changed certificates (what the release changes in production), and of the
// published ones not located yet, those whose address may have an answer now: a failure to ask
// again, or a not-found due to be asked again. When production's certificates are not all
// accounted for that way, every published one not located yet (a third of them in the bench's
// data: 9 M rows at 28 M, which took 23 s to read by their index).
Candidates addresses_to_look_at(db::Session& session, long long run_id) {
    const ReleaseChanges changes = release_changes(session, run_id);
    if (changes.first_release) return {"SELECT address_key, address, uprn FROM " + session.staging().rows, true};
    const std::string production = production_table(session.type());
    const std::string unlocated = "SELECT p.address_key, p.address, p.uprn FROM " + production +
                                  " p WHERE p.latitude IS NULL AND p.address_key IS NOT NULL AND NOT EXISTS (SELECT 1 "
                                  "FROM " +
                                  changes.table + " c WHERE c.cert_key = p.cert_key)";
    const bool accounted_for = published_ones_accounted_for(session);
    const std::string asked_again =
        accounted_for ? " AND p.address_key IN (SELECT address_key FROM epc.geocode_retry UNION SELECT c.address_key "
                        "FROM epc.geocode_cache c WHERE " +
                            due_again("c") + ")"
                      : "";
    return {"SELECT address_key, address, uprn FROM " + changes.table + " WHERE change <> 'gone' UNION ALL " +
                unlocated + asked_again,
            !accounted_for};
}

void record_summary(db::Session& session, long long run_id, const GeocodeSummary& summary) {
    const nlohmann::json counters = {{"to_locate", summary.to_locate},
                                     {"sent", summary.sent},
                                     {"found", summary.found},
                                     {"not_found", summary.not_found},
                                     {"failed", summary.failed},
                                     {"postcodes_asked", summary.postcodes_asked},
                                     {"http_requests", summary.http_requests},
                                     {"http_429", summary.http_429},
                                     // See published_ones_accounted_for().
                                     {"retries_kept", true}};
    session.db().exec("UPDATE epc.import_run SET geocode = $2 WHERE run_id = $1", {run_id, counters.dump()});
    spdlog::info(
        "geocode: {} addresses to locate, {} located, {} not found, {} failed (asked again next run); {} "
        "postcodes asked of postcode-level services; {} HTTP requests ({:.1f}/s), {} answered 429, in {:.1f} s "
        "({:.0f} addresses/s)",
        summary.to_locate, summary.found, summary.not_found, summary.failed, summary.postcodes_asked,
        summary.http_requests, summary.seconds > 0 ? static_cast<double>(summary.http_requests) / summary.seconds : 0.0,
        summary.http_429, summary.seconds,
        summary.seconds > 0 ? static_cast<double>(summary.to_locate) / summary.seconds : 0.0);
}

}  // namespace

GeocodeSummary geocode(db::Session& session, const GeocodeOptions& options) {
    const auto started = std::chrono::steady_clock::now();
    session.prepare_schema();
    session.lock();
    const long long run_id = staged_run(session);
    for (const ChainLink& link : options.chain)
        if (!link.file.empty()) load_reference(session.db(), link);
    std::vector<std::unique_ptr<HttpGeocoder>> http = make_http_geocoders(options);

    GeocodeSummary summary;
    ChainWalk(session, options, http, summary).locate(addresses_to_look_at(session, run_id));

    summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    record_summary(session, run_id, summary);
    return summary;
}

}  // namespace epc
