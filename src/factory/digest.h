// SHA-256 digests of template files, recorded by `vmfactory init` and
// checked whenever a template is used.
#pragma once

#include <string>

#include "common/status.h"

namespace vmf {

// Lowercase hex SHA-256 of the file's contents.
Result<std::string> Sha256File(const std::string& path);

// Checks that path's contents have the digest `want`; DATA_LOSS naming the
// file (`what`) when they do not. A large file is hashed once per version
// of it: while its inode, size, mtime and ctime stay the same (any write
// changes them), the result of the last check stands.
Status CheckDigest(const std::string& what, const std::string& path, const std::string& want);

}  // namespace vmf
