// SHA-256 digests: of template files, recorded by `vmfactory init` and
// checked whenever a template is used, and of short strings (names).
#pragma once

#include <string>
#include <string_view>

#include "common/status.h"

namespace vmf {

// Lowercase hex SHA-256 of the file's contents.
Result<std::string> Sha256File(const std::string& path);
// Lowercase hex SHA-256 of data ("" if OpenSSL fails).
std::string Sha256Hex(std::string_view data);

// What identifies one version of a file: "dev:ino:size:mtime:ctime" (ns).
// Any write to the file, or change of its owner or mode, gives it a new
// ctime, which no process can set back (short of changing the clock); the
// times come from the kernel's coarse clock, so a stamp is only taken of a
// file that nobody can write any more (init: after making it read-only).
Result<std::string> FileStamp(const std::string& path);

// Checks that path's contents have the digest `want`; DATA_LOSS naming the
// file (`what`) when they do not. A large file is hashed once per version
// of it: while its inode, size, mtime and ctime stay the same (any write
// changes them), the result of the last check stands, in this process and,
// when `stamp` is the FileStamp that init took after hashing the file, in
// every process (so that a new `vmfactory run` need not hash 256 MiB).
Status CheckDigest(const std::string& what, const std::string& path, const std::string& want,
                   const std::string& stamp = "");

}  // namespace vmf
