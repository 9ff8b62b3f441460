#include "epc/extract/download_files.hpp"

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "epc/common/types.hpp"

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace epc {

namespace {

json read_json_file(const std::string& path) {
    std::ifstream in(path);
    if (!in) return json();
    return json::parse(in, nullptr, false);
}

void write_json_file(const std::string& path, const json& j) {
    std::ofstream out(path, std::ios::trunc);
    out << j.dump() << '\n';
    if (!out) throw Error(exit_internal, "cannot write " + path);
}

json release_record(const ReleaseInfo& info) {
    return {{"file", info.file_name}, {"size", info.size}, {"last_updated", info.last_updated}};
}

std::string record_path(const std::string& file) { return file + ".json"; }

}  // namespace

// ---- PartFile ----------------------------------------------------------------------------------

void PartFile::resume() {
    size_ = sha256_update_from_file(hasher_, path_);
    open("ab");
}

void PartFile::restart() {
    hasher_.reset();
    size_ = 0;
    open("wb");
}

bool PartFile::write(const char* data, std::size_t n) {
    if (std::fwrite(data, 1, n, file_.get()) != n) {
        error_ = std::strerror(errno);
        return false;
    }
    hasher_.update(data, n);
    size_ += n;
    return true;
}

void PartFile::flush() {
    if (std::fflush(file_.get()) != 0)
        throw Error(exit_internal, "cannot write " + path_ + ": " + std::strerror(errno));
}

void PartFile::close() {
    flush();
    file_.reset();
}

void PartFile::open(const char* mode) {
    file_.reset(std::fopen(path_.c_str(), mode));
    if (!file_) throw Error(exit_internal, "cannot write " + path_ + ": " + std::strerror(errno));
    std::setvbuf(file_.get(), nullptr, _IOFBF, 1 << 20);
}

// ---- Records -----------------------------------------------------------------------------------

std::optional<std::string> finished_download(const std::string& zip, const ReleaseInfo& info) {
    const json done = read_json_file(record_path(zip));
    std::error_code ec;
    auto size = fs::file_size(zip, ec);
    if (ec || info.size == 0 || size != info.size || !done.is_object() || !done.contains("sha256")) return std::nullopt;
    if (done.value("file", "") != info.file_name || done.value("size", std::uint64_t{0}) != info.size ||
        done.value("last_updated", "") != info.last_updated)
        return std::nullopt;
    return done.value("sha256", "");
}

void forget_finished_download(const std::string& zip) {
    std::error_code ec;
    fs::remove(record_path(zip), ec);
}

bool open_part(PartFile& part, const ReleaseInfo& info) {
    const json record = release_record(info);
    std::error_code ec;
    auto on_disk = fs::file_size(part.path(), ec);
    bool same_release = !ec && on_disk > 0 && info.size > 0 && on_disk <= info.size &&
                        read_json_file(record_path(part.path())) == record;
    if (same_release) part.resume();
    else part.restart();
    write_json_file(record_path(part.path()), record);
    return same_release;
}

std::string keep_finished_download(PartFile& part, const std::string& zip, const ReleaseInfo& info) {
    part.close();
    std::string sha256 = part.digest();
    std::error_code ec;
    fs::rename(part.path(), zip, ec);
    if (ec) throw Error(exit_internal, "cannot rename " + part.path() + " to " + zip + ": " + ec.message());
    fs::remove(record_path(part.path()), ec);
    {
        std::ofstream out(zip + ".sha256", std::ios::trunc);
        out << sha256 << "  " << fs::path(zip).filename().string() << '\n';
        if (!out) throw Error(exit_internal, "cannot write " + zip + ".sha256");
    }
    json record = release_record(info);
    record["sha256"] = sha256;
    write_json_file(record_path(zip), record);
    return sha256;
}

}  // namespace epc
