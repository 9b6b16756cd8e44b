/* auth — see auth.h. Tokens are signed by libjwt but verified here, by hand: a strict
 * three-segment base64url parser, the algorithm pinned to HS256 before anything else is
 * believed, a constant-time HMAC comparison, and only then the claims, parsed by jansson
 * with every type checked (integers are JSON integers, strings are strings). Passwords go
 * through libargon2; randomness comes from getrandom(2). */
#include "auth.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <argon2.h>
#include <jansson.h>
#include <jwt.h>
#include <lauxlib.h>
#include <lua.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include "lua_core.h"

/* A real token is ~350 bytes; the cap bounds the work an unauthenticated client can ask for. */
#define TOKEN_MAX 8192
#define DECODED_MAX (TOKEN_MAX / 4 * 3 + 3)
#define SECRET_MIN 32
#define HS256_LEN 32
/* base64url of {"alg":"HS256","typ":"JWT"}, the header libjwt 1.10 writes. */
#define OUR_HEADER "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"

#define ARGON_T 2
#define ARGON_M 19456
#define ARGON_P 1
#define ARGON_SALT 16
#define ARGON_HASH 32
#define ARGON_PREFIX "$argon2id$v=19$m=19456,t=2,p=1$"
/* Hashes longer than this are not ours: refuse them before libargon2 parses them. */
#define ENCODED_MAX 512

/* ---- small helpers ---- */

static void say(char *why, size_t whylen, const char *fmt, ...) {
    if (!why || whylen == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, whylen, fmt, ap);
    va_end(ap);
}

/* Fills buf with len bytes from the kernel CSPRNG. Returns 0 or -1 (never a short read). */
static int fill_random(void *buf, size_t len) {
    unsigned char *p = buf;
    while (len > 0) {
        ssize_t n = getrandom(p, len, 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static void to_hex(const unsigned char *in, size_t len, char *out) {
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * len] = '\0';
}

static const char B64URL[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* base64url without padding; out must hold 4 * ceil(len / 3) + 1 bytes. Returns the length. */
static size_t b64url_encode(const unsigned char *in, size_t len, char *out) {
    size_t o = 0, i = 0;
    for (; i + 3 <= len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = B64URL[v >> 18];
        out[o++] = B64URL[(v >> 12) & 63];
        out[o++] = B64URL[(v >> 6) & 63];
        out[o++] = B64URL[v & 63];
    }
    if (len - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        out[o++] = B64URL[v >> 18];
        out[o++] = B64URL[(v >> 12) & 63];
    } else if (len - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[o++] = B64URL[v >> 18];
        out[o++] = B64URL[(v >> 12) & 63];
        out[o++] = B64URL[(v >> 6) & 63];
    }
    out[o] = '\0';
    return o;
}

/* Character -> 6-bit value, -1 outside the alphabet: the hot loop of every verification. */
static const signed char B64URL_VALUE[256] = {
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 62, -1, -1,
    52, 53, 54, 55, 56, 57, 58, 59, 60, 61, -1, -1, -1, -1, -1, -1,
    -1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14,
    15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, -1, -1, -1, -1, 63,
    -1, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40,
    41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
};

static int b64url_value(unsigned char c) { return B64URL_VALUE[c]; }

/* Strict base64url decoding: no padding, no other characters, and the unused low bits of the
 * last character must be zero, so each byte string has exactly one accepted spelling (a token
 * cannot be re-spelled into a different string that still verifies). out holds len*3/4 bytes.
 * Returns the decoded length, or -1. */
static long b64url_decode(const char *in, size_t len, unsigned char *out) {
    if (len % 4 == 1) return -1;
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len; i++) {
        int v = b64url_value((unsigned char)in[i]);
        if (v < 0) return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    if (acc != 0) return -1; /* non-canonical trailing bits */
    return (long)o;
}

/* 1 when s (len bytes) is a canonical lower-case UUID: 8-4-4-4-12 hex digits. */
static int is_uuid(const char *s, size_t len) {
    if (len != AUTH_UUID_LEN) return 0;
    for (size_t i = 0; i < len; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-') return 0;
        } else if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) {
            return 0;
        }
    }
    return 1;
}

/* Roles are compared with their length, so "user\0x" is not "user". */
static int is_role(const char *s, size_t len) {
    return (len == 4 && !memcmp(s, "user", 4)) || (len == 5 && !memcmp(s, "admin", 5));
}

static int secret_ok(const struct auth_keys *k) {
    return k && k->secret && k->secret_len >= SECRET_MIN && k->secret_len <= INT_MAX;
}

/* ---- access tokens ---- */

char *auth_token_issue(const struct auth_keys *k, const char *user_id, const char *role, int64_t now,
                       struct auth_claims *claims_out) {
    jwt_t *jwt = NULL;
    char *token = NULL;
    struct auth_claims c;
    memset(&c, 0, sizeof c);
    /* Never sign what auth_token_verify would refuse. */
    if (!secret_ok(k) || !k->issuer || !k->audience || k->access_ttl_s <= 0 || !user_id || !role) goto done;
    if (!is_uuid(user_id, strlen(user_id)) || !is_role(role, strlen(role))) goto done;
    if (now < 0 || now > INT64_MAX - k->access_ttl_s || now + k->access_ttl_s > LONG_MAX) goto done;
    memcpy(c.sub, user_id, AUTH_UUID_LEN + 1);
    snprintf(c.role, sizeof c.role, "%s", role);
    if (auth_random_hex(c.jti) != 0) goto done;
    c.iat = now;
    c.exp = now + k->access_ttl_s;

    if (jwt_new(&jwt) != 0) goto done;
    if (jwt_add_grant(jwt, "sub", c.sub) || jwt_add_grant(jwt, "role", c.role) ||
        jwt_add_grant_int(jwt, "iat", (long)c.iat) || jwt_add_grant_int(jwt, "nbf", (long)c.iat) ||
        jwt_add_grant_int(jwt, "exp", (long)c.exp) || jwt_add_grant(jwt, "jti", c.jti) ||
        jwt_add_grant(jwt, "iss", k->issuer) || jwt_add_grant(jwt, "aud", k->audience))
        goto done;
    if (jwt_set_alg(jwt, JWT_ALG_HS256, k->secret, (int)k->secret_len) != 0) goto done;
    token = jwt_encode_str(jwt); /* malloc'd by libjwt 1.10 (no custom allocator): ours to return */
    if (token && claims_out) *claims_out = c;
done:
    jwt_free(jwt);
    return token;
}

/* Looks up key in obj as a JSON integer. Returns 1 (found, *v set), 0 (absent) or -1 (wrong type). */
static int get_int(json_t *obj, const char *key, int64_t *v) {
    json_t *j = json_object_get(obj, key);
    if (!j) return 0;
    if (!json_is_integer(j)) return -1;
    *v = (int64_t)json_integer_value(j);
    return 1;
}

/* Looks up key in obj as a JSON string. Returns its bytes and length, or NULL when absent or not a string. */
static const char *get_str(json_t *obj, const char *key, size_t *len) {
    json_t *j = json_object_get(obj, key);
    if (!json_is_string(j)) return NULL;
    *len = json_string_length(j);
    return json_string_value(j);
}

static int str_is(const char *s, size_t len, const char *want) {
    return s && len == strlen(want) && !memcmp(s, want, len);
}

static int aud_ok(json_t *payload, const char *audience) {
    json_t *aud = json_object_get(payload, "aud");
    if (json_is_string(aud)) return str_is(json_string_value(aud), json_string_length(aud), audience);
    if (!json_is_array(aud)) return 0;
    size_t i;
    json_t *v;
    json_array_foreach(aud, i, v) {
        if (json_is_string(v) && str_is(json_string_value(v), json_string_length(v), audience)) return 1;
    }
    return 0;
}

/* Checks the decoded JOSE header: an object whose alg is exactly "HS256". kid/jku/x5u/typ are
 * ignored (the key is ours, never the token's to choose); crit is refused because RFC 7515
 * requires rejecting extensions we do not implement. Returns NULL or the reason. */
static const char *check_header(const unsigned char *buf, size_t len) {
    const char *why = NULL;
    json_t *h = json_loadb((const char *)buf, len, JSON_REJECT_DUPLICATES, NULL);
    if (!json_is_object(h)) { why = "header not a JSON object"; goto done; }
    size_t alen = 0;
    const char *alg = get_str(h, "alg", &alen);
    if (!alg) { why = "alg missing"; goto done; }
    if (!str_is(alg, alen, "HS256")) { why = "alg not allowed"; goto done; }
    if (json_object_get(h, "crit")) { why = "crit header not supported"; goto done; }
done:
    json_decref(h);
    return why;
}

int auth_token_verify(const struct auth_keys *k, const char *token, int64_t now, struct auth_claims *out,
                      char *why, size_t whylen) {
    unsigned char buf[DECODED_MAX];
    json_t *payload = NULL;
    const char *reason = NULL;
    int rc = -1;

    if (!secret_ok(k) || !k->issuer || !k->audience) { reason = "bad keys"; goto done; }
    if (!token) { reason = "no token"; goto done; }
    /* strnlen, not strlen: the cap is enforced without walking an unbounded string. */
    size_t len = strnlen(token, TOKEN_MAX + 1);
    if (len > TOKEN_MAX) { reason = "token too long"; goto done; }

    /* Exactly two dots, three non-empty segments, nothing but the base64url alphabet. */
    size_t dot[2], ndots = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)token[i];
        if (ch == '.') {
            if (ndots == 2) { reason = "malformed token"; goto done; }
            dot[ndots++] = i;
        } else if (b64url_value(ch) < 0) {
            reason = "malformed token";
            goto done;
        }
    }
    if (ndots != 2 || dot[0] == 0 || dot[1] == dot[0] + 1 || dot[1] + 1 == len) {
        reason = "malformed token";
        goto done;
    }
    const char *hseg = token, *pseg = token + dot[0] + 1, *sseg = token + dot[1] + 1;
    size_t hlen = dot[0], plen = dot[1] - dot[0] - 1, slen = len - dot[1] - 1;

    /* Our own header, byte for byte, needs no parsing (the strict decoder gives each header one
     * spelling); any other header is decoded and checked in full. */
    if (!(hlen == sizeof OUR_HEADER - 1 && !memcmp(hseg, OUR_HEADER, hlen))) {
        long hn = b64url_decode(hseg, hlen, buf);
        if (hn < 0) { reason = "malformed header"; goto done; }
        if ((reason = check_header(buf, (size_t)hn)) != NULL) goto done;
    }

    /* Signature: HMAC-SHA256 over the ASCII "header.payload", compared in constant time. */
    unsigned char mac[EVP_MAX_MD_SIZE], sig[HS256_LEN + 3];
    unsigned int maclen = 0;
    if (slen != 43) { reason = "bad signature"; goto done; } /* 32 bytes, unpadded */
    if (b64url_decode(sseg, slen, sig) != HS256_LEN) { reason = "bad signature"; goto done; }
    if (!HMAC(EVP_sha256(), k->secret, (int)k->secret_len, (const unsigned char *)token, dot[1], mac, &maclen) ||
        maclen != HS256_LEN) {
        reason = "hmac failed";
        goto done;
    }
    if (CRYPTO_memcmp(mac, sig, HS256_LEN) != 0) { reason = "bad signature"; goto done; }

    /* Authentic from here on; the claims are still checked as if they were not. */
    long n = b64url_decode(pseg, plen, buf);
    if (n < 0) { reason = "malformed payload"; goto done; }
    payload = json_loadb((const char *)buf, (size_t)n, JSON_REJECT_DUPLICATES, NULL);
    if (!json_is_object(payload)) { reason = "payload not a JSON object"; goto done; }

    int skew = k->skew_s > 0 ? k->skew_s : 0;
    int64_t lo = now < INT64_MIN + skew ? INT64_MIN : now - skew;
    int64_t hi = now > INT64_MAX - skew ? INT64_MAX : now + skew;
    int64_t exp = 0, iat = 0, nbf = 0;
    int r = get_int(payload, "exp", &exp);
    if (r <= 0) { reason = r == 0 ? "exp missing" : "exp not an integer"; goto done; }
    if (exp <= lo) { reason = "expired"; goto done; }
    r = get_int(payload, "iat", &iat);
    if (r <= 0) { reason = r == 0 ? "iat missing" : "iat not an integer"; goto done; }
    if (iat > hi) { reason = "iat in the future"; goto done; }
    r = get_int(payload, "nbf", &nbf);
    if (r < 0) { reason = "nbf not an integer"; goto done; }
    if (r == 1 && nbf > hi) { reason = "not yet valid"; goto done; }

    size_t slen2 = 0;
    const char *s = get_str(payload, "iss", &slen2);
    if (!str_is(s, slen2, k->issuer)) { reason = "wrong issuer"; goto done; }
    if (!aud_ok(payload, k->audience)) { reason = "wrong audience"; goto done; }

    struct auth_claims c;
    memset(&c, 0, sizeof c);
    s = get_str(payload, "sub", &slen2);
    if (!s || !is_uuid(s, slen2)) { reason = "sub not a UUID"; goto done; }
    memcpy(c.sub, s, AUTH_UUID_LEN);
    s = get_str(payload, "role", &slen2);
    if (!s || !is_role(s, slen2)) { reason = "role not allowed"; goto done; }
    memcpy(c.role, s, slen2);
    /* We issue 32 hex characters; anything that does not fit the struct is not ours. */
    s = get_str(payload, "jti", &slen2);
    if (!s || slen2 == 0 || slen2 > AUTH_JTI_LEN || memchr(s, '\0', slen2)) { reason = "bad jti"; goto done; }
    memcpy(c.jti, s, slen2);
    c.iat = iat;
    c.exp = exp;
    if (out) *out = c;
    rc = 0;
done:
    json_decref(payload);
    if (rc != 0) say(why, whylen, "%s", reason ? reason : "invalid token");
    return rc;
}

/* ---- passwords ---- */

int auth_password_hash(const char *password, size_t len, char out[AUTH_HASH_MAX]) {
    unsigned char salt[ARGON_SALT];
    if ((!password && len) || len > UINT32_MAX) return -1;
    if (fill_random(salt, sizeof salt) != 0) return -1;
    int rc = argon2id_hash_encoded(ARGON_T, ARGON_M, ARGON_P, password, len, salt, sizeof salt, ARGON_HASH, out,
                                   AUTH_HASH_MAX);
    OPENSSL_cleanse(salt, sizeof salt);
    return rc == ARGON2_OK ? 0 : -1;
}

int auth_password_verify(const char *encoded, const char *password, size_t len) {
    if (!encoded || (!password && len) || len > UINT32_MAX) return 0;
    /* Only our own algorithm and cost: the parameters come from the string, so a corrupted or
     * planted row with m=4194304 would otherwise make libargon2 allocate 4 GiB per attempt. When
     * the cost changes, accept the old prefix here too (and rehash on login). */
    if (strnlen(encoded, ENCODED_MAX + 1) > ENCODED_MAX || strncmp(encoded, ARGON_PREFIX, strlen(ARGON_PREFIX)) != 0)
        return 0;
    return argon2id_verify(encoded, password, len) == ARGON2_OK;
}

static pthread_once_t dummy_once = PTHREAD_ONCE_INIT;
static char dummy_encoded[AUTH_HASH_MAX];
static int dummy_ready;

/* A valid hash with our parameters, computed once; a fixed salt is fine, it protects nothing. */
static void dummy_init(void) {
    static const unsigned char salt[ARGON_SALT] = "orrery-dummy-slt";
    static const char pw[] = "orrery dummy password";
    dummy_ready = argon2id_hash_encoded(ARGON_T, ARGON_M, ARGON_P, pw, sizeof pw - 1, salt, sizeof salt, ARGON_HASH,
                                        dummy_encoded, sizeof dummy_encoded) == ARGON2_OK;
}

void auth_password_dummy_verify(const char *password, size_t len) {
    pthread_once(&dummy_once, dummy_init);
    if ((!password && len) || len > UINT32_MAX) {
        password = "";
        len = 0;
    }
    if (dummy_ready) {
        (void)argon2id_verify(dummy_encoded, password, len);
    } else {
        /* Could not build the reference hash: still spend the same work. */
        unsigned char raw[ARGON_HASH];
        static const unsigned char salt[ARGON_SALT] = "orrery-dummy-slt";
        (void)argon2id_hash_raw(ARGON_T, ARGON_M, ARGON_P, password, len, salt, sizeof salt, raw, sizeof raw);
    }
}

/* ---- refresh tokens, digests, randomness ---- */

int auth_refresh_new(char out[AUTH_REFRESH_LEN + 1]) {
    unsigned char raw[32];
    if (fill_random(raw, sizeof raw) != 0) return -1;
    char tmp[45];
    b64url_encode(raw, sizeof raw, tmp);
    memcpy(out, tmp, AUTH_REFRESH_LEN + 1);
    OPENSSL_cleanse(raw, sizeof raw);
    OPENSSL_cleanse(tmp, sizeof tmp);
    return 0;
}

void auth_sha256_hex(const char *data, size_t len, char out[AUTH_SHA256_HEX + 1]) {
    unsigned char md[SHA256_DIGEST_LENGTH];
    unsigned int mdlen = 0;
    if (!EVP_Digest(data ? data : "", data ? len : 0, md, &mdlen, EVP_sha256(), NULL) || mdlen != sizeof md) {
        /* Cannot happen short of a broken libcrypto; an impossible digest never matches a row. */
        memset(out, 'x', AUTH_SHA256_HEX);
        out[AUTH_SHA256_HEX] = '\0';
        return;
    }
    to_hex(md, sizeof md, out);
}

int auth_random_hex(char out[AUTH_JTI_LEN + 1]) {
    unsigned char raw[AUTH_JTI_LEN / 2];
    if (fill_random(raw, sizeof raw) != 0) return -1;
    to_hex(raw, sizeof raw, out);
    return 0;
}

int auth_ct_equal(const void *a, const void *b, size_t len) { return CRYPTO_memcmp(a, b, len) == 0; }

/* ---- Sealed strings (opaque pagination cursors) ---- */

#define SEAL_MAC 16  /* truncated HMAC-SHA256: enough to make forging a cursor pointless */

char *auth_seal(const struct auth_keys *k, const char *data, size_t len) {
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    if (len > 4096 || !HMAC(EVP_sha256(), k->secret, (int)k->secret_len, (const unsigned char *)data, len, mac, &maclen))
        return NULL;
    char *out = malloc(4 * ((len + 2) / 3) + 1 + 4 * ((SEAL_MAC + 2) / 3) + 1);
    if (!out) return NULL;
    size_t n = b64url_encode((const unsigned char *)data, len, out);
    out[n++] = '.';
    b64url_encode(mac, SEAL_MAC, out + n);
    return out;
}

char *auth_unseal(const struct auth_keys *k, const char *sealed, size_t *len_out) {
    const char *dot = sealed ? strchr(sealed, '.') : NULL;
    size_t dlen = dot ? (size_t)(dot - sealed) : 0;
    if (!dot || dlen == 0 || dlen > 6000 || strlen(dot + 1) != 22) return NULL;
    unsigned char *data = malloc(dlen * 3 / 4 + 2), given[SEAL_MAC + 2], mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    if (!data) return NULL;
    long n = b64url_decode(sealed, dlen, data);
    if (n < 0 || b64url_decode(dot + 1, 22, given) != SEAL_MAC ||
        !HMAC(EVP_sha256(), k->secret, (int)k->secret_len, data, (size_t)n, mac, &maclen) ||
        CRYPTO_memcmp(mac, given, SEAL_MAC) != 0) {
        free(data);
        return NULL;
    }
    data[n] = '\0';
    if (len_out) *len_out = (size_t)n;
    return (char *)data;
}

/* ---- orrery.core bindings (issuer "orrery", audience "orrery-api", ttl 900, skew 60) ---- */

static void lua_keys(lua_State *L, int idx, struct auth_keys *k, int ttl) {
    size_t slen = 0;
    k->secret = (const unsigned char *)luaL_checklstring(L, idx, &slen);
    k->secret_len = slen;
    k->issuer = "orrery";
    k->audience = "orrery-api";
    k->access_ttl_s = ttl;
    k->skew_s = 60;
}

static void push_claims(lua_State *L, const struct auth_claims *c) {
    lua_createtable(L, 0, 5); /* stack: claims */
    lua_pushstring(L, c->sub);
    lua_setfield(L, -2, "sub");
    lua_pushstring(L, c->role);
    lua_setfield(L, -2, "role");
    lua_pushstring(L, c->jti);
    lua_setfield(L, -2, "jti");
    lua_pushinteger(L, (lua_Integer)c->iat);
    lua_setfield(L, -2, "iat");
    lua_pushinteger(L, (lua_Integer)c->exp);
    lua_setfield(L, -2, "exp");
}

/* core.auth_token_issue(secret, user_id, role, now [, ttl]) -> token, claims | nil, err */
static int l_auth_token_issue(lua_State *L) {
    struct auth_keys k;
    lua_Integer ttl = luaL_optinteger(L, 5, 900);
    luaL_argcheck(L, ttl > 0 && ttl <= INT_MAX, 5, "ttl out of range");
    lua_keys(L, 1, &k, (int)ttl);
    const char *user_id = luaL_checkstring(L, 2);
    const char *role = luaL_checkstring(L, 3);
    lua_Integer now = luaL_checkinteger(L, 4);
    struct auth_claims c;
    char *token = auth_token_issue(&k, user_id, role, (int64_t)now, &c);
    if (!token) {
        lua_pushnil(L);
        lua_pushstring(L, "cannot issue token");
        return 2;
    }
    lua_pushstring(L, token);
    free(token);
    push_claims(L, &c);
    return 2;
}

/* core.auth_token_verify(token, secret, now) -> claims | nil, why */
static int l_auth_token_verify(lua_State *L) {
    size_t tlen = 0;
    const char *token = luaL_checklstring(L, 1, &tlen);
    struct auth_keys k;
    lua_keys(L, 2, &k, 900);
    lua_Integer now = luaL_checkinteger(L, 3);
    /* The C API sees a C string; a Lua string carries its length, so a NUL inside it would hide a
     * suffix from the verifier. Callers holding a length must refuse such tokens the same way. */
    if (strlen(token) != tlen) {
        lua_pushnil(L);
        lua_pushstring(L, "embedded NUL");
        return 2;
    }
    struct auth_claims c;
    char why[64];
    if (auth_token_verify(&k, token, (int64_t)now, &c, why, sizeof why) != 0) {
        lua_pushnil(L);
        lua_pushstring(L, why);
        return 2;
    }
    push_claims(L, &c);
    return 1;
}

/* core.auth_password_hash(pw) -> encoded | nil, err */
static int l_auth_password_hash(lua_State *L) {
    size_t len = 0;
    const char *pw = luaL_checklstring(L, 1, &len);
    char out[AUTH_HASH_MAX];
    if (auth_password_hash(pw, len, out) != 0) {
        lua_pushnil(L);
        lua_pushstring(L, "cannot hash password");
        return 2;
    }
    lua_pushstring(L, out);
    return 1;
}

/* core.auth_password_verify(encoded, pw) -> boolean */
static int l_auth_password_verify(lua_State *L) {
    size_t elen = 0, len = 0;
    const char *encoded = luaL_checklstring(L, 1, &elen);
    const char *pw = luaL_checklstring(L, 2, &len);
    lua_pushboolean(L, strlen(encoded) == elen && auth_password_verify(encoded, pw, len));
    return 1;
}

/* core.auth_password_dummy_verify(pw) */
static int l_auth_password_dummy_verify(lua_State *L) {
    size_t len = 0;
    const char *pw = luaL_checklstring(L, 1, &len);
    auth_password_dummy_verify(pw, len);
    return 0;
}

/* core.auth_refresh_new() -> string */
static int l_auth_refresh_new(lua_State *L) {
    char out[AUTH_REFRESH_LEN + 1];
    if (auth_refresh_new(out) != 0) return luaL_error(L, "getrandom failed");
    lua_pushstring(L, out);
    return 1;
}

/* core.auth_sha256_hex(s) -> hex */
static int l_auth_sha256_hex(lua_State *L) {
    size_t len = 0;
    const char *s = luaL_checklstring(L, 1, &len);
    char out[AUTH_SHA256_HEX + 1];
    auth_sha256_hex(s, len, out);
    lua_pushstring(L, out);
    return 1;
}

/* core.auth_hmac("sha256"|"sha384"|"sha512", key, data) -> raw MAC: lets specs forge tokens. */
static int l_auth_hmac(lua_State *L) {
    static const char *const names[] = {"sha256", "sha384", "sha512", NULL};
    int which = luaL_checkoption(L, 1, NULL, names);
    size_t klen = 0, dlen = 0;
    const char *key = luaL_checklstring(L, 2, &klen);
    const char *data = luaL_checklstring(L, 3, &dlen);
    luaL_argcheck(L, klen <= INT_MAX, 2, "key too long");
    const EVP_MD *md = which == 0 ? EVP_sha256() : which == 1 ? EVP_sha384() : EVP_sha512();
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    if (!HMAC(md, key, (int)klen, (const unsigned char *)data, dlen, mac, &maclen)) return luaL_error(L, "HMAC failed");
    lua_pushlstring(L, (const char *)mac, maclen);
    return 1;
}

/* core.auth_b64url(raw) -> base64url without padding */
static int l_auth_b64url(lua_State *L) {
    size_t len = 0;
    const char *raw = luaL_checklstring(L, 1, &len);
    luaL_argcheck(L, len <= (SIZE_MAX - 8) / 4 * 3, 1, "too long");
    luaL_Buffer b;
    char *out = luaL_buffinitsize(L, &b, (len + 2) / 3 * 4 + 1);
    size_t n = b64url_encode((const unsigned char *)raw, len, out);
    luaL_pushresultsize(&b, n);
    return 1;
}

void auth_lua_register(lua_State *L) {
    static const luaL_Reg fns[] = {
        {"auth_token_issue", l_auth_token_issue},
        {"auth_token_verify", l_auth_token_verify},
        {"auth_password_hash", l_auth_password_hash},
        {"auth_password_verify", l_auth_password_verify},
        {"auth_password_dummy_verify", l_auth_password_dummy_verify},
        {"auth_refresh_new", l_auth_refresh_new},
        {"auth_sha256_hex", l_auth_sha256_hex},
        {"auth_hmac", l_auth_hmac},
        {"auth_b64url", l_auth_b64url},
        {NULL, NULL},
    };
    luaL_setfuncs(L, fns, 0); /* stack: core */
}
