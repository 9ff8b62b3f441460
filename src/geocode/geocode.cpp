#include "epc/geocode/geocode.hpp"

#include <strings.h>
#include <sys/stat.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include <spdlog/spdlog.h>

#include "epc/load/ledger.hpp"
#include "epc/load/pg.hpp"
#include "epc/transform/csv.hpp"
#include "epc/transform/fields.hpp"

namespace epc {

namespace {

const char* const kHttpProviders[] = {"postcodes-io", "google", "nominatim", "os-places"};

// Queries read from the database per round of the chain: enough to keep HTTP providers busy,
// few enough that memory stays small whatever the number of addresses.
constexpr int kChunk = 5000;

class FileSource : public io::ByteSourceBase {
public:
    explicit FileSource(const std::string& path) : file_(std::fopen(path.c_str(), "rb")) {
        if (!file_) throw Error(exit_usage, "cannot open geocoder file " + path);
    }
    ~FileSource() override { std::fclose(file_); }
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
    const char* table;      // epc.ref_<name>
    const char* key_type;   // SQL type of the key column
    Precision precision;
};

Reference reference_for(const std::string& provider) {
    if (provider == "uprn") return {"epc.ref_uprn", "bigint", Precision::property};
    return {"epc.ref_postcode", "text", Precision::postcode};
}

// Loads an offline reference file (OS Open UPRN: UPRN, LATITUDE, LONGITUDE; ONSPD: pcds, lat, long)
// into its table with COPY, unless this very file (name, size, mtime) was loaded before.
void load_reference(pg::Connection& db, const ChainLink& link) {
    namespace fs = std::filesystem;
    struct stat st {};
    if (stat(link.file.c_str(), &st) != 0) throw Error(exit_usage, "geocoder file " + link.file + " does not exist");
    const std::string identity = fs::path(link.file).filename().string() + ":" + std::to_string(st.st_size) + ":" +
                                 std::to_string(st.st_mtime);
    const Reference ref = reference_for(link.provider);
    pg::Result known = db.exec("SELECT file_identity FROM epc.reference_file WHERE provider = $1", {link.provider});
    if (known.rows() == 1 && known.text(0, 0) == identity && db.exec(std::string("SELECT to_regclass('") + ref.table + "') IS NOT NULL").text(0, 0) == "t") {
        spdlog::info("geocode: {} reference already loaded from {}", link.provider, link.file);
        return;
    }
    spdlog::info("geocode: loading {} reference from {}", link.provider, link.file);
    const auto started = std::chrono::steady_clock::now();
    CsvReader reader(link.file, std::make_unique<FileSource>(link.file));
    Record record;
    if (!reader.next(record)) throw Error(exit_usage, "geocoder file " + link.file + " is empty");
    const bool uprn = link.provider == "uprn";
    const int key = uprn ? find(record.fields, {"UPRN"}) : find(record.fields, {"pcds", "pcd2", "pcd"});
    const int lat = find(record.fields, {"LATITUDE", "lat"});
    const int lon = find(record.fields, {"LONGITUDE", "long", "lon"});
    if (key < 0 || lat < 0 || lon < 0)
        throw Error(exit_usage, "geocoder file " + link.file + ": header lacks " +
                                    (uprn ? "UPRN, LATITUDE, LONGITUDE" : "pcds, lat, long") + " columns");

    db.exec("BEGIN");
    db.exec(std::string("DROP TABLE IF EXISTS ") + ref.table);
    db.exec(std::string("CREATE TABLE ") + ref.table + " (key " + ref.key_type +
            " NOT NULL, latitude double precision NOT NULL, longitude double precision NOT NULL)");
    db.copy_start(std::string("COPY ") + ref.table + " FROM STDIN");
    std::string buf;
    std::uint64_t rows = 0, skipped = 0;
    const int width = std::max({key, lat, lon}) + 1;
    while (reader.next(record)) {
        if (static_cast<int>(record.fields.size()) < width) {
            ++skipped;
            continue;
        }
        std::string_view k = trim(record.fields[key]), la = trim(record.fields[lat]), lo = trim(record.fields[lon]);
        // ONSPD writes 99.999999 for postcodes without a location.
        if (!is_decimal(la) || !is_decimal(lo) || la == "99.999999" || (uprn && !is_uprn(k)) || k.empty()) {
            ++skipped;
            continue;
        }
        if (uprn) buf.append(k);
        else append_copy_text(buf, canonical_postcode(k));
        buf += '\t';
        buf.append(la);
        buf += '\t';
        buf.append(lo);
        buf += '\n';
        ++rows;
        if (buf.size() > (1 << 20)) {
            db.copy_put(buf.data(), buf.size());
            buf.clear();
        }
    }
    db.copy_put(buf.data(), buf.size());
    db.copy_end();
    // Terminated and live postcodes can share a display form; keep one row per key.
    db.exec(std::string("DELETE FROM ") + ref.table + " a USING " + ref.table +
            " b WHERE a.key = b.key AND a.ctid > b.ctid");
    db.exec(std::string("ALTER TABLE ") + ref.table + " ADD PRIMARY KEY (key)");
    db.exec("INSERT INTO epc.reference_file (provider, file_identity, rows, loaded_at) VALUES ($1, $2, $3, now()) "
            "ON CONFLICT (provider) DO UPDATE SET file_identity = EXCLUDED.file_identity, rows = EXCLUDED.rows, "
            "loaded_at = now()",
            {link.provider, identity, std::to_string(rows)});
    db.exec("COMMIT");
    db.exec(std::string("ANALYZE ") + ref.table);
    spdlog::info("geocode: {} rows of {} loaded ({} without a location skipped) in {:.1f} s", rows, link.provider,
                 skipped, std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
}

struct Final {
    std::size_t index;
    GeocodeResult result;
    std::string provider;
};

// Writes final answers to the permanent cache in batches, each in its own transaction, so a crash
// loses at most one batch and a re-run asks only for what is not cached.
class CacheWriter {
public:
    CacheWriter(pg::Connection& db, std::size_t batch) : db_(db), batch_(batch) {
        db_.exec("CREATE TEMP TABLE epc_geocode_batch (address_key text, status text, latitude double precision, "
                 "longitude double precision, provider text, precision text) ON COMMIT DELETE ROWS");
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
        db_.exec("BEGIN");
        db_.copy_start("COPY epc_geocode_batch FROM STDIN");
        db_.copy_put(buf_.data(), buf_.size());
        db_.copy_end();
        db_.exec("INSERT INTO epc.geocode_cache (address_key, status, latitude, longitude, provider, precision, "
                 "checked_at) SELECT DISTINCT ON (address_key) address_key, status, latitude, longitude, provider, "
                 "precision, now() FROM epc_geocode_batch "
                 "ON CONFLICT (address_key) DO UPDATE SET status = EXCLUDED.status, latitude = EXCLUDED.latitude, "
                 "longitude = EXCLUDED.longitude, provider = EXCLUDED.provider, precision = EXCLUDED.precision, "
                 "checked_at = EXCLUDED.checked_at");
        db_.exec("COMMIT");
        buf_.clear();
        pending_ = 0;
    }

private:
    pg::Connection& db_;
    std::size_t batch_;
    std::string buf_;
    std::size_t pending_ = 0;
};

// Looks queries up in an offline reference table; returns index -> coordinates for those found.
std::map<std::size_t, std::pair<double, double>> lookup_reference(pg::Connection& db, const std::string& provider,
                                                                  const std::vector<GeocodeQuery>& queries,
                                                                  const std::vector<std::size_t>& indexes) {
    const Reference ref = reference_for(provider);
    std::string keys = "{", idx = "{";
    bool any = false;
    for (std::size_t i : indexes) {
        const GeocodeQuery& q = queries[i];
        std::string k;
        if (provider == "uprn") {
            if (!q.uprn) continue;
            k = std::to_string(*q.uprn);
        } else {
            if (q.postcode.empty()) continue;
            k = "\"" + q.postcode + "\"";  // canonical postcodes hold only letters, digits and a space
        }
        if (any) keys += ',', idx += ',';
        keys += k;
        idx += std::to_string(i);
        any = true;
    }
    std::map<std::size_t, std::pair<double, double>> found;
    if (!any) return found;
    keys += '}';
    idx += '}';
    pg::Result r = db.exec(std::string("SELECT q.i, r.latitude, r.longitude FROM unnest($1::") + ref.key_type +
                               "[], $2::int[]) AS q(key, i) JOIN " + ref.table + " r USING (key)",
                           {keys, idx});
    for (int row = 0; row < r.rows(); ++row)
        found[static_cast<std::size_t>(r.integer(row, 0))] = {std::stod(r.text(row, 1)), std::stod(r.text(row, 2))};
    return found;
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
                throw Error(exit_usage, "--geocoder: '" + link.provider + "' takes no file (only uprn:FILE and onspd:FILE do)");
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
                throw Error(exit_usage, "--geocoder: unknown provider '" + link.provider +
                                            "' (known: uprn:FILE, onspd:FILE, postcodes-io, google, nominatim, os-places)");
        }
        links.push_back(link);
    }
    return links;
}

GeocodeSummary geocode(const GeocodeOptions& options) {
    const auto started = std::chrono::steady_clock::now();
    const std::string type(cert_type_name(options.type));
    const StagingTables staging = staging_tables(options.type);
    GeocodeSummary summary;

    pg::Connection db(options.conninfo, "epc-import " + type + " geocode");
    pg::Connection writer_db(options.conninfo, "epc-import " + type + " geocode writer");
    Ledger ledger(db, options.type);
    ledger.ensure_schema();
    if (!options.locked_by_caller) ledger.lock();
    pg::Result owner = db.exec("SELECT r.run_id, r.status FROM epc.staging_owner o JOIN epc.import_run r USING (run_id) "
                               "WHERE o.cert_type = $1",
                               {type});
    if (owner.rows() == 0 || (owner.text(0, 1) != "loaded" && owner.text(0, 1) != "published"))
        throw Error(exit_usage, "nothing to geocode for " + type + ": no completely loaded run in staging (run 'load' first)");
    const std::string run = owner.text(0, 0);

    for (const ChainLink& link : options.chain)
        if (!link.file.empty()) load_reference(db, link);
    std::vector<std::unique_ptr<HttpGeocoder>> http(options.chain.size());
    for (std::size_t i = 0; i < options.chain.size(); ++i) {
        if (!options.chain[i].file.empty()) continue;
        HttpGeocoderOptions ho = options.http;
        ho.base_url = options.chain[i].base_url;
        ho.rate = options.rate;
        const char* key_var = options.chain[i].provider == "google"      ? "GOOGLE_API_KEY"
                              : options.chain[i].provider == "os-places" ? "OS_PLACES_API_KEY"
                                                                         : nullptr;
        if (key_var) {
            const char* key = std::getenv(key_var);
            if (!key || !*key)
                throw Error(exit_usage, "--geocoder " + options.chain[i].provider + " needs the " + key_var + " variable");
            ho.api_key = key;
        }
        http[i] = make_http_geocoder(options.chain[i].provider, ho);
        if (!http[i]) throw Error(exit_usage, "geocoder " + options.chain[i].provider + " is not available");
    }

    // Distinct keys of this release, found in PostgreSQL; then drop those the cache answers.
    db.exec("BEGIN");
    db.exec("SET LOCAL work_mem = '256MB'");
    db.exec("SET LOCAL jit = off");
    db.exec("CREATE TEMP TABLE epc_geocode_todo ON COMMIT DROP AS SELECT address_key, min(address) AS address, "
            "min(uprn) AS uprn FROM " + staging.rows + " WHERE address_key IS NOT NULL GROUP BY address_key");
    summary.distinct_addresses = static_cast<std::uint64_t>(db.exec("SELECT count(*) FROM epc_geocode_todo").integer(0, 0));
    pg::Result hits = db.exec(
        "DELETE FROM epc_geocode_todo t USING epc.geocode_cache c WHERE c.address_key = t.address_key AND "
        "(c.status = 'found' OR c.checked_at > now() - make_interval(days => $1))",
        {std::to_string(options.retry_not_found_days)});
    summary.cache_hits = std::stoull(hits.affected());
    spdlog::info("geocode: {} distinct addresses, {} already in the cache, {} to locate", summary.distinct_addresses,
                 summary.cache_hits, summary.distinct_addresses - summary.cache_hits);
    db.exec("DECLARE epc_todo NO SCROLL CURSOR FOR SELECT address_key, coalesce(address, ''), uprn "
            "FROM epc_geocode_todo ORDER BY address_key");

    CacheWriter writer(writer_db, options.batch);
    for (;;) {
        pg::Result chunk = db.exec("FETCH " + std::to_string(kChunk) + " FROM epc_todo");
        if (chunk.rows() == 0) break;
        std::vector<GeocodeQuery> queries(static_cast<std::size_t>(chunk.rows()));
        for (int i = 0; i < chunk.rows(); ++i) {
            GeocodeQuery& q = queries[static_cast<std::size_t>(i)];
            q.key = chunk.text(i, 0);
            q.address = chunk.text(i, 1);
            q.postcode = q.key.substr(q.key.find('|') + 1);
            if (!chunk.is_null(i, 2)) q.uprn = static_cast<std::uint64_t>(chunk.integer(i, 2));
        }
        summary.sent += queries.size();
        // Each query walks the chain until a provider finds it; a transient failure stops it there
        // (a later, coarser provider must not answer for a better one that was merely down).
        std::vector<std::size_t> remaining(queries.size());
        for (std::size_t i = 0; i < remaining.size(); ++i) remaining[i] = i;
        for (std::size_t l = 0; l < options.chain.size() && !remaining.empty(); ++l) {
            const ChainLink& link = options.chain[l];
            std::vector<std::size_t> next;
            if (!link.file.empty()) {
                auto found = lookup_reference(db, link.provider, queries, remaining);
                for (std::size_t i : remaining) {
                    auto it = found.find(i);
                    if (it == found.end()) {
                        next.push_back(i);
                        continue;
                    }
                    GeocodeResult r;
                    r.status = GeocodeResult::Status::found;
                    r.latitude = it->second.first;
                    r.longitude = it->second.second;
                    r.precision = reference_for(link.provider).precision;
                    writer.add(queries[i].key, r, link.provider);
                    ++summary.found;
                    ++summary.found_by_provider[link.provider];
                }
            } else {
                std::vector<GeocodeQuery> subset;
                for (std::size_t i : remaining) subset.push_back(queries[i]);
                HttpGeocodeStats stats = http[l]->geocode(subset, [&](std::size_t k, const GeocodeResult& r) {
                    std::size_t i = remaining[k];
                    if (r.status == GeocodeResult::Status::found) {
                        writer.add(queries[i].key, r, link.provider);
                        ++summary.found;
                        ++summary.found_by_provider[link.provider];
                    } else if (r.status == GeocodeResult::Status::not_found) {
                        next.push_back(i);
                    } else {
                        ++summary.failed;
                    }
                });
                summary.http_requests += stats.requests;
                summary.http_429 += stats.http_429;
            }
            remaining = std::move(next);
        }
        GeocodeResult nobody_found;
        nobody_found.status = GeocodeResult::Status::not_found;
        for (std::size_t i : remaining) {
            writer.add(queries[i].key, nobody_found, "chain");
            ++summary.not_found;
        }
    }
    writer.flush();
    db.exec("COMMIT");

    summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    db.exec("UPDATE epc.import_run SET geocode = $2 WHERE run_id = $1",
            {run, "{\"distinct_addresses\": " + std::to_string(summary.distinct_addresses) +
                      ", \"cache_hits\": " + std::to_string(summary.cache_hits) + ", \"sent\": " +
                      std::to_string(summary.sent) + ", \"found\": " + std::to_string(summary.found) +
                      ", \"not_found\": " + std::to_string(summary.not_found) + ", \"failed\": " +
                      std::to_string(summary.failed) + ", \"http_requests\": " + std::to_string(summary.http_requests) +
                      ", \"http_429\": " + std::to_string(summary.http_429) + "}"});
    spdlog::info("geocode: {} sent, {} found, {} not found, {} failed (asked again next run); {} HTTP requests "
                 "({:.1f}/s), {} answered 429, in {:.1f} s ({:.0f} addresses/s)",
                 summary.sent, summary.found, summary.not_found, summary.failed, summary.http_requests,
                 summary.seconds > 0 ? static_cast<double>(summary.http_requests) / summary.seconds : 0.0,
                 summary.http_429, summary.seconds,
                 summary.seconds > 0 ? static_cast<double>(summary.sent) / summary.seconds : 0.0);
    return summary;
}

}  // namespace epc
