// The command line, driven with fake argv as an operator would type it.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>

#include "epc/common/options.hpp"

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
    EXPECT_EQ(r.options->command, "run");
    EXPECT_EQ(r.options->type, CertType::domestic);
    EXPECT_GE(r.options->jobs, 1u);
    EXPECT_TRUE(r.options->backslash_escapes);
}

TEST(Options, SubcommandAndOptionsInAnyOrder) {
    ParseResult r = parse({"--certtype", "non-domestic", "load", "--zip", "a.zip", "--jobs", "3", "--max-rejects", "10"});
    ASSERT_TRUE(r.options);
    EXPECT_EQ(r.options->command, "load");
    EXPECT_EQ(r.options->type, CertType::non_domestic);
    EXPECT_EQ(*r.options->zip, "a.zip");
    EXPECT_EQ(r.options->jobs, 3u);
    EXPECT_EQ(*r.options->max_rejects, 10u);
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
    o.command = "publish";
    o.zip = "a.zip";
    EXPECT_THROW(check_options(o), Error);  // publish works on staging, not on an archive
    o.command = "geocode";
    o.zip.reset();
    EXPECT_THROW(check_options(o), Error);  // geocode needs --geocoder
    o.geocoder = "postcodes-io,bogus";
    try {
        check_options(o);
        FAIL() << "unknown geocoder accepted";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("'bogus'"), std::string::npos) << e.what();
    }
    o.command = "run";
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
