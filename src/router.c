/* router — see router.h. Patterns are split into segments once; matching walks the path's
 * segments against each route in turn (the table is small: tens of routes). */
#include "router.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "lua_core.h"

#define MAX_SEGMENTS 16

struct segment {
    char *text;       /* literal text, or the parameter name (owned) */
    size_t len;
    int is_param;
};

struct compiled {
    struct segment seg[MAX_SEGMENTS];
    int nseg;
    int nliteral;
};

struct router {
    const struct route *routes;
    size_t count;
    struct compiled *compiled;  /* one per route (owned) */
};

static void compiled_free(struct compiled *c) {
    for (int i = 0; i < c->nseg; i++) free(c->seg[i].text);
}

static int compile(const char *pattern, struct compiled *c, char *err, size_t errlen) {
    memset(c, 0, sizeof *c);
    if (!pattern || pattern[0] != '/') {
        snprintf(err, errlen, "route '%s': pattern must start with '/'", pattern ? pattern : "(null)");
        return -1;
    }
    int nparams = 0;
    const char *p = pattern + 1;
    if (*p == '\0') return 0; /* "/" has no segments */
    while (1) {
        const char *end = strchr(p, '/');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == 0 || c->nseg == MAX_SEGMENTS) {
            snprintf(err, errlen, "route '%s': empty segment or too many segments", pattern);
            goto fail;
        }
        struct segment *s = &c->seg[c->nseg];
        if (p[0] == '{') {
            if (len < 3 || p[len - 1] != '}' || memchr(p + 1, '{', len - 2) || memchr(p + 1, '}', len - 2) ||
                len - 2 >= sizeof(((struct route_param *)0)->name) || ++nparams > ROUTER_MAX_PARAMS) {
                snprintf(err, errlen, "route '%s': bad parameter", pattern);
                goto fail;
            }
            s->is_param = 1;
            s->text = strndup(p + 1, len - 2);
            s->len = len - 2;
        } else {
            if (memchr(p, '{', len) || memchr(p, '}', len)) {
                snprintf(err, errlen, "route '%s': braces inside a literal segment", pattern);
                goto fail;
            }
            s->text = strndup(p, len);
            s->len = len;
            c->nliteral++;
        }
        if (!s->text) { snprintf(err, errlen, "out of memory"); goto fail; }
        c->nseg++;
        if (!end) break;
        p = end + 1;
    }
    return 0;
fail:
    compiled_free(c);
    return -1;
}

struct router *router_new(const struct route *routes, size_t count, char *err, size_t errlen) {
    struct router *r = calloc(1, sizeof *r);
    if (!r || !(r->compiled = calloc(count ? count : 1, sizeof *r->compiled))) {
        free(r);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    r->routes = routes;
    for (size_t i = 0; i < count; i++) {
        if (!routes[i].method || compile(routes[i].pattern, &r->compiled[i], err, errlen) != 0) {
            if (!routes[i].method) snprintf(err, errlen, "route %zu: no method", i);
            r->count = i;
            router_free(r);
            return NULL;
        }
    }
    r->count = count;
    return r;
}

void router_free(struct router *r) {
    if (!r) return;
    for (size_t i = 0; i < r->count; i++) compiled_free(&r->compiled[i]);
    free(r->compiled);
    free(r);
}

size_t router_count(const struct router *r) { return r ? r->count : 0; }

/* Splits path into segments (pointers into path, with lengths). Returns the count, or -1 when
 * the path cannot match any route (no leading '/', an empty segment, too many segments). */
static int split_path(const char *path, const char **seg, size_t *len) {
    if (path[0] != '/') return -1;
    const char *p = path + 1;
    int n = 0;
    if (*p == '\0') return 0;
    while (1) {
        const char *end = strchr(p, '/');
        size_t l = end ? (size_t)(end - p) : strlen(p);
        if (l == 0 || n == MAX_SEGMENTS) return -1;
        seg[n] = p;
        len[n] = l;
        n++;
        if (!end) return n;
        p = end + 1;
    }
}

static int path_matches(const struct compiled *c, int n, const char **seg, const size_t *len) {
    if (c->nseg != n) return 0;
    for (int i = 0; i < n; i++) {
        const struct segment *s = &c->seg[i];
        if (s->is_param) {
            if (len[i] >= ROUTER_MAX_PARAM_LEN) return 0;
        } else if (s->len != len[i] || memcmp(s->text, seg[i], len[i]) != 0) {
            return 0;
        }
    }
    return 1;
}

static void allow_add(char *allow, size_t cap, const char *method) {
    /* The list is short; skip duplicates so "GET" from two patterns shows once. */
    size_t ml = strlen(method);
    for (const char *p = allow; (p = strstr(p, method)) != NULL; p += ml)
        if ((p == allow || p[-1] == ' ') && (p[ml] == ',' || p[ml] == '\0')) return;
    size_t used = strlen(allow);
    snprintf(allow + used, cap - used, "%s%s", used ? ", " : "", method);
}

void router_match(const struct router *r, const char *method, const char *path, struct route_match *m) {
    memset(m, 0, sizeof *m);
    m->index = -1;
    m->status = 404;
    const char *seg[MAX_SEGMENTS];
    size_t len[MAX_SEGMENTS];
    int n = split_path(path, seg, len);
    if (n < 0) return;

    int is_head = !strcmp(method, "HEAD");
    int best = -1, best_score = -1, path_found = 0;
    for (size_t i = 0; i < r->count; i++) {
        const struct compiled *c = &r->compiled[i];
        if (!path_matches(c, n, seg, len)) continue;
        const char *rm = r->routes[i].method;
        /* 405's Allow must only list methods of the most specific path shape that matched. */
        path_found = 1;
        int method_ok = !strcmp(rm, method) || (is_head && !strcmp(rm, "GET"));
        if (method_ok && c->nliteral > best_score) {
            best = (int)i;
            best_score = c->nliteral;
        }
    }
    if (best >= 0) {
        const struct compiled *c = &r->compiled[best];
        m->route = &r->routes[best];
        m->index = best;
        m->status = 0;
        for (int i = 0; i < c->nseg; i++) {
            if (!c->seg[i].is_param) continue;
            struct route_param *p = &m->params[m->nparams++];
            snprintf(p->name, sizeof p->name, "%s", c->seg[i].text);
            memcpy(p->value, seg[i], len[i]);
            p->value[len[i]] = '\0';
        }
        return;
    }
    if (!path_found) return;
    m->status = 405;
    for (size_t i = 0; i < r->count; i++) {
        if (!path_matches(&r->compiled[i], n, seg, len)) continue;
        allow_add(m->allow, sizeof m->allow, r->routes[i].method);
        if (!strcmp(r->routes[i].method, "GET")) allow_add(m->allow, sizeof m->allow, "HEAD");
    }
}

const char *route_param(const struct route_match *m, const char *name) {
    for (int i = 0; i < m->nparams; i++)
        if (!strcmp(m->params[i].name, name)) return m->params[i].value;
    return NULL;
}

/* ---- orrery.core binding: core.router_new{{"GET", "/a/{id}"}, ...}:match(method, path) ---- */

#define ROUTER_MT "orrery.router"

struct lua_router {
    struct router *router;
    struct route *routes;  /* owned copies of the patterns and methods */
    size_t count;
};

static int l_router_gc(lua_State *L) {
    struct lua_router *lr = luaL_checkudata(L, 1, ROUTER_MT);
    router_free(lr->router);
    lr->router = NULL;
    if (lr->routes) {
        for (size_t i = 0; i < lr->count; i++) {
            free((char *)lr->routes[i].method);
            free((char *)lr->routes[i].pattern);
        }
        free(lr->routes);
        lr->routes = NULL;
    }
    return 0;
}

/* Returns {status=0|404|405, index=i (1-based) or nil, allow="..." , params={...}}. */
static int l_router_match(lua_State *L) {
    struct lua_router *lr = luaL_checkudata(L, 1, ROUTER_MT);
    const char *method = luaL_checkstring(L, 2);
    const char *path = luaL_checkstring(L, 3);
    struct route_match m;
    router_match(lr->router, method, path, &m);
    lua_createtable(L, 0, 4);
    lua_pushinteger(L, m.status);
    lua_setfield(L, -2, "status");
    if (m.index >= 0) {
        lua_pushinteger(L, m.index + 1);
        lua_setfield(L, -2, "index");
    }
    if (m.status == 405) {
        lua_pushstring(L, m.allow);
        lua_setfield(L, -2, "allow");
    }
    lua_createtable(L, 0, m.nparams);
    for (int i = 0; i < m.nparams; i++) {
        lua_pushstring(L, m.params[i].value);
        lua_setfield(L, -2, m.params[i].name);
    }
    lua_setfield(L, -2, "params");
    return 1;
}

static int l_router_new(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    size_t n = (size_t)luaL_len(L, 1);
    struct lua_router *lr = lua_newuserdatauv(L, sizeof *lr, 0);
    memset(lr, 0, sizeof *lr);
    luaL_setmetatable(L, ROUTER_MT);
    lr->routes = calloc(n ? n : 1, sizeof *lr->routes);
    if (!lr->routes) return luaL_error(L, "out of memory");
    for (size_t i = 0; i < n; i++) {
        lua_geti(L, 1, (lua_Integer)i + 1);
        luaL_argcheck(L, lua_istable(L, -1), 1, "each route is {method, pattern}");
        lua_geti(L, -1, 1);
        lua_geti(L, -2, 2);
        const char *method = luaL_checkstring(L, -2);
        const char *pattern = luaL_checkstring(L, -1);
        lr->routes[i].method = strdup(method);
        lr->routes[i].pattern = strdup(pattern);
        lr->count = i + 1;
        lua_pop(L, 3);
        if (!lr->routes[i].method || !lr->routes[i].pattern) return luaL_error(L, "out of memory");
    }
    char err[256];
    lr->router = router_new(lr->routes, n, err, sizeof err);
    if (!lr->router) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    return 1;
}

void router_lua_register(lua_State *L) {
    if (luaL_newmetatable(L, ROUTER_MT)) {
        lua_pushcfunction(L, l_router_gc);
        lua_setfield(L, -2, "__gc");
        lua_createtable(L, 0, 1);
        lua_pushcfunction(L, l_router_match);
        lua_setfield(L, -2, "match");
        lua_setfield(L, -2, "__index");
    }
    lua_pop(L, 1);
    lua_pushcfunction(L, l_router_new);
    lua_setfield(L, -2, "router_new");
}
