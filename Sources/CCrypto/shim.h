// OpenSSL's message digests (Debian libssl-dev): SHA-256 of teacher files and cache shards.
#include <openssl/evp.h>
