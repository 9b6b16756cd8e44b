/* auth — the cryptography of accounts: HS256 access tokens (signed with libjwt, verified with a
 * pinned algorithm and a constant-time HMAC comparison, since libjwt 1.10 compares signatures
 * with strcmp and checks no claims), argon2id password hashes (libargon2), and opaque refresh
 * tokens (256 random bits, stored as SHA-256). No I/O, no database: api_auth.c does that.
 * Uses libjwt, jansson, libargon2 and OpenSSL's libcrypto (HMAC, SHA-256). */
#ifndef ORRERY_AUTH_H
#define ORRERY_AUTH_H

#include <stddef.h>
#include <stdint.h>

#define AUTH_UUID_LEN 36
#define AUTH_ROLE_MAX 16
#define AUTH_JTI_LEN 32          /* 128 bits as hex */
#define AUTH_REFRESH_LEN 43      /* 256 bits, base64url without padding */
#define AUTH_SHA256_HEX 64

struct auth_keys {
    const unsigned char *secret; /* ORRERY_JWT_SECRET, at least 32 bytes (borrowed) */
    size_t secret_len;
    const char *issuer;          /* "iss" we sign and require, e.g. "orrery" */
    const char *audience;        /* "aud" we sign and require, e.g. "orrery-api" */
    int access_ttl_s;            /* lifetime of an access token, e.g. 900 */
    int skew_s;                  /* tolerated clock skew for iat/nbf/exp, 60 */
};

struct auth_claims {
    char sub[AUTH_UUID_LEN + 1];   /* the user's id */
    char role[AUTH_ROLE_MAX];      /* "user" | "admin" */
    char jti[AUTH_JTI_LEN + 1];
    int64_t iat, exp;
};

/* Signs an access token for user_id/role at time now. Returns a malloc'd token (caller frees),
 * or NULL. Fills *claims_out (may be NULL) with what was signed. */
char *auth_token_issue(const struct auth_keys *k, const char *user_id, const char *role, int64_t now,
                       struct auth_claims *claims_out);

/* Verifies token at time now: header alg must be exactly HS256 (kid/jku ignored), signature by
 * constant-time HMAC-SHA256 comparison, then exp (required, > now - skew), nbf (if present,
 * <= now + skew), iat (required, <= now + skew), iss and aud equal to ours, sub a UUID, role
 * "user" or "admin", jti present. Returns 0 and fills *out, or -1 with a short reason in why
 * (for logs, never for clients: they get one generic 401). Never reads past a NUL. */
int auth_token_verify(const struct auth_keys *k, const char *token, int64_t now, struct auth_claims *out,
                      char *why, size_t whylen);

/* argon2id with t=2, m=19456 KiB, p=1, 16-byte random salt, 32-byte hash: writes the encoded
 * string ("$argon2id$v=19$m=19456,t=2,p=1$...") into out. Returns 0 or -1. ~20-30 ms of CPU. */
#define AUTH_HASH_MAX 128
int auth_password_hash(const char *password, size_t len, char out[AUTH_HASH_MAX]);
/* 1 when password matches encoded, 0 when not (or encoded is malformed). Same cost as hashing. */
int auth_password_verify(const char *encoded, const char *password, size_t len);
/* Burns the same CPU as a verification against a real hash: used for unknown emails so that
 * login answers take the same time whether or not the account exists. */
void auth_password_dummy_verify(const char *password, size_t len);

/* A fresh refresh token (base64url of 32 random bytes) into out. Returns 0 or -1. */
int auth_refresh_new(char out[AUTH_REFRESH_LEN + 1]);
/* Lower-case hex SHA-256 of a token, as stored in refresh_tokens.token_hash. */
void auth_sha256_hex(const char *data, size_t len, char out[AUTH_SHA256_HEX + 1]);
/* Fills out with 128 random bits as hex (jti, ids). Returns 0 or -1. */
int auth_random_hex(char out[AUTH_JTI_LEN + 1]);

/* Seals data (at most 4 KiB) as "base64url(data).base64url(mac)" so a client can carry it back
 * (pagination cursors) but not alter it. Returns a malloc'd string or NULL. */
char *auth_seal(const struct auth_keys *k, const char *data, size_t len);
/* The data of a string auth_seal made with the same key, NUL-terminated and malloc'd (length in
 * *len_out if not NULL); NULL for anything else. */
char *auth_unseal(const struct auth_keys *k, const char *sealed, size_t *len_out);

/* Constant-time equality of two buffers of the same length. */
int auth_ct_equal(const void *a, const void *b, size_t len);

#endif
