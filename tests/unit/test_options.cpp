// The command line, driven with fake argv as an operator would type it.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>

#include <nlohmann/json.hpp>

#include "epc/app/options.hpp"

using namespace epc;

namespace {

ParseResult parse(std::vector<std::string> args) {
    // CLI11 prints help and errors; keep test output readable.
    testing::internal::CaptureStdout();
    testing::internal::CaptureStderr();
    ParseResult r = parse_options(args);
    testing::internal::GetCapturedStdout();
    testing::internal::GetCapturedStderr();
    return r;
}

}  // namespace

TEST(Options, DefaultsToRunDomestic) {
    ParseResult r = parse({});
    ASSERT_TRUE(r.options);
    EXPECT_EQ(r.options->command, Command::run);
    EXPECT_EQ(r.options->type, CertType::domestic);
    EXPECT_GE(r.options->jobs, 1u);
    EXPECT_TRUE(r.options->backslash_escapes);
}

TEST(Options, SubcommandAndOptionsInAnyOrder) {
    ParseResult r = parse(
        {"--certtype", "non-domestic", "load", "--zip", "a.zip", "--jobs", "3", "--max-rejects", "10"});
    ASSERT_TRUE(r.options);
    EXPECT_EQ(r.options->command, Command::load);
    EXPECT_EQ(r.options->type, CertType::non_domestic);
    EXPECT_EQ(*r.options->zip, "a.zip");
    EXPECT_EQ(r.options->jobs, 3u);
    EXPECT_EQ(*r.options->max_rejects, 10u);
}

// status covers every type unless --certtype names one, before or after the command.
TEST(Options, StatusKnowsWhetherCerttypeWasGiven) {
    ParseResult all = parse({"status"});
    ASSERT_TRUE(all.options);
    EXPECT_EQ(all.options->command, Command::status);
    EXPECT_FALSE(all.options->type_given);
    for (const auto& args : {std::vector<std::string>{"status", "--certtype", "display"},
                             std::vector<std::string>{"--certtype", "display", "status"}}) {
        ParseResult one = parse(args);
        ASSERT_TRUE(one.options);
        EXPECT_EQ(one.options->command, Command::status);
        EXPECT_TRUE(one.options->type_given);
        EXPECT_EQ(one.options->type, CertType::display);
    }
    EXPECT_EQ(nlohmann::json::parse(describe_options(*all.options))["cert_type"], "all");  // --dry-run
    EXPECT_EQ(nlohmann::json::parse(describe_options(*parse({"status", "--certtype", "display"}).options))["cert_type"],
              "display");
    ParseResult with_zip = parse({"status", "--zip", "a.zip"});
    ASSERT_TRUE(with_zip.options);
    EXPECT_THROW(check_options(*with_zip.options), Error);  // status reads the database, not an archive
}

TEST(Options, BadValuesAreUsageErrors) {
    EXPECT_EQ(parse({"--certtype", "commercial"}).exit_code, exit_usage);
    EXPECT_EQ(parse({"--jobs", "0"}).exit_code, exit_usage);
    EXPECT_EQ(parse({"--jobs", "many"}).exit_code, exit_usage);
    EXPECT_EQ(parse({"--expect-dirs", "-1"}).exit_code, exit_usage);
    EXPECT_EQ(parse({"--log-format", "xml"}).exit_code, exit_usage);
    EXPECT_EQ(parse({"--no-such-option"}).exit_code, exit_usage);
    EXPECT_EQ(parse({"frobnicate"}).exit_code, exit_usage);
}

TEST(Options, HelpAndVersionExitZero) {
    ParseResult help = parse({"--help"});
    EXPECT_FALSE(help.options);
    EXPECT_EQ(help.exit_code, exit_ok);
    EXPECT_EQ(parse({"--version"}).exit_code, exit_ok);
}

TEST(Options, CheckOptionsExplainsWhatIsWrong) {
    Options o;
    EXPECT_NO_THROW(check_options(o));  // no --zip: the release is downloaded
    o.command = Command::publish;
    o.zip = "a.zip";
    EXPECT_THROW(check_options(o), Error);  // publish works on staging, not on an archive
    o.command = Command::geocode;
    o.zip.reset();
    EXPECT_THROW(check_options(o), Error);  // geocode needs --geocoder
    o.geocoder = "postcodes-io,bogus";
    try {
        check_options(o);
        FAIL() << "unknown geocoder accepted";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("'bogus'"), std::string::npos) << e.what();
    }
    o.command = Command::run;
    o.geocoder.clear();
    o.zip = "/nonexistent/a.zip";
    try {
        check_options(o);
        FAIL();
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("no such file"), std::string::npos);
    }
    std::string zip = testing::TempDir() + "options-test.zip";
    std::ofstream(zip) << "x";
    o.zip = zip;
    o.db = "host=localhost password=s3cret port";  // malformed: 'port' lacks '='
    try {
        check_options(o);
        FAIL();
    } catch (const Error& e) {
        EXPECT_EQ(e.code(), exit_usage);
        EXPECT_EQ(std::string(e.what()).find("s3cret"), std::string::npos) << e.what();
    }
    o.db = "postgresql://u:pw@localhost/db";
    EXPECT_NO_THROW(check_options(o));
    std::remove(zip.c_str());
}

TEST(Options, ShardFromTheOptionOrTheArrayJobVariables) {
    EXPECT_EQ(parse_shard("0/4")->index, 0);
    EXPECT_EQ(parse_shard("3/4")->count, 4);
    for (const char* bad : {"4/4", "-1/4", "1/0", "1", "/4", "1/", "a/b", "1/4x", "9999999/10000000"})
        EXPECT_FALSE(parse_shard(bad)) << bad;

    auto no_env = [](const char*) -> const char* { return nullptr; };
    ParseResult r = parse_options({"load", "--shard", "2/3"}, no_env);
    ASSERT_TRUE(r.options && r.options->shard);
    EXPECT_EQ(r.options->shard->index, 2);
    EXPECT_EQ(r.options->shard->count, 3);
    EXPECT_FALSE(parse_options({"load", "--shard", "0/1"}, no_env).options->shard);  // the whole archive
    EXPECT_EQ(parse({"load", "--shard", "3/3"}).exit_code, exit_usage);

    auto array_child = [](const char* name) -> const char* {
        std::string n = name;
        return n == "AWS_BATCH_JOB_ARRAY_INDEX" ? "1" : n == "AWS_BATCH_JOB_ARRAY_SIZE" ? "4" : nullptr;
    };
    r = parse_options({"load"}, array_child);
    ASSERT_TRUE(r.options && r.options->shard);
    EXPECT_EQ(r.options->shard->index, 1);
    EXPECT_EQ(r.options->shard->count, 4);
    r = parse_options({"load", "--shard", "0/2"}, array_child);  // the option wins
    EXPECT_EQ(r.options->shard->count, 2);
    EXPECT_FALSE(parse_options({"publish"}, array_child).options->shard);  // not a load: ignored

    auto index_only = [](const char* name) -> const char* {
        return std::string(name) == "AWS_BATCH_JOB_ARRAY_INDEX" ? "1" : nullptr;
    };
    testing::internal::CaptureStderr();
    EXPECT_EQ(parse_options({"load"}, index_only).exit_code, exit_usage);
    EXPECT_NE(testing::internal::GetCapturedStderr().find("AWS_BATCH_JOB_ARRAY_SIZE is not set"), std::string::npos);

    // A full run cannot be split: the shards load, one publish follows.
    r = parse_options({"run"}, array_child);
    ASSERT_TRUE(r.options);
    try {
        check_options(*r.options);
        FAIL() << "run accepted a shard";
    } catch (const Error& e) {
        EXPECT_EQ(e.code(), exit_usage);
        EXPECT_NE(std::string(e.what()).find("epc-import publish"), std::string::npos) << e.what();
    }
}

TEST(Options, SubmitOptionsBelongToCheckReleaseAndMustBeComplete) {
    auto check = [](std::vector<std::string> args) -> std::string {
        ParseResult r = parse(args);
        if (!r.options) return "parse failed";
        try {
            check_options(*r.options);
            return "";
        } catch (const Error& e) {
            return e.what();
        }
    };
    EXPECT_EQ(check({"check-release", "--submit-queue", "q", "--submit-run-definition", "run:1"}), "");
    EXPECT_EQ(check({"check-release", "--submit-queue", "q", "--submit-shards", "4", "--submit-load-definition", "l",
                     "--submit-publish-definition", "p"}),
              "");
    EXPECT_NE(check({"check-release", "--submit-queue", "q"}).find("--submit-run-definition"), std::string::npos);
    EXPECT_NE(check({"check-release", "--submit-queue", "q", "--submit-shards", "4", "--submit-load-definition", "l"})
                  .find("--submit-publish-definition"),
              std::string::npos);
    EXPECT_NE(check({"check-release", "--submit-run-definition", "r"}).find("need --submit-queue"), std::string::npos);
    EXPECT_NE(check({"run", "--submit-queue", "q", "--submit-run-definition", "r"}).find("belong to check-release"),
              std::string::npos);
    EXPECT_EQ(parse({"check-release", "--submit-shards", "0"}).exit_code, exit_usage);
}

TEST(Options, DryRunDescribesTheEffectiveConfigurationWithoutSecrets) {
    ParseResult r = parse({"load", "--certtype", "display", "--shard", "1/2", "--dry-run", "--db",
                           "postgresql://u:s3cret@h/db", "--archive-to", "s3://raw/epc"});
    ASSERT_TRUE(r.options);
    EXPECT_TRUE(r.options->dry_run);
    std::string text = describe_options(*r.options);
    EXPECT_NE(text.find("\"cert_type\": \"display\""), std::string::npos) << text;
    EXPECT_NE(text.find("\"archive_to\": \"s3://raw/epc\""), std::string::npos) << text;
    EXPECT_NE(text.find("\"index\": 1"), std::string::npos) << text;
    EXPECT_EQ(text.find("s3cret"), std::string::npos) << text;
}
