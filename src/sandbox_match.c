/* sandbox_match — string.find, string.match, string.gmatch and string.gsub for sandboxed scripts.
 * The language is Lua 5.4's patterns (reference manual §6.4.1), matched by the same backtracking
 * method, but this matcher counts its work: a backtracking matcher is exponential in the number of
 * quantifiers for some patterns (string.find(("a"):rep(30), ("a-"):rep(30) .. "b") runs for ages),
 * and no hook fires inside C. Each call may take at most MATCH_BASE_STEPS + MATCH_STEPS_PER_BYTE x
 * (subject length + 1) steps — then it raises "pattern too complex" — and every MATCH_CHARGE_EVERY
 * steps it charges them to the run (sandbox_charge), which ends the run at its instruction budget
 * or deadline. A step is one attempt of a pattern item at one position, plus the length of any
 * class, capture or replacement it walks, so the bound on the time of a call holds by
 * construction. Plain finds use memmem (linear). Errors say what Lua's say. Uses sandbox.c. */
#include <ctype.h>
#include <stddef.h>
#include <string.h>

#include <lauxlib.h>

#include "sandbox_internal.h"

#define MATCH_BASE_STEPS 1000000L
#define MATCH_STEPS_PER_BYTE 256L
#define MATCH_CHARGE_EVERY 65536L
#define MAXCAPTURES 32 /* LUA_MAXCAPTURES */
#define MAXDEPTH 200   /* nested match calls, as lstrlib's MAXCCALLS: bounds the C stack */
#define CAP_UNFINISHED (-1)
#define CAP_POSITION (-2)
#define ESC '%'
#define SPECIALS "^$*+?.([%-"

#define uchar(c) ((unsigned char)(c))

struct mstate {
    const char *src_init, *src_end; /* the subject */
    const char *p_end;              /* end of the pattern */
    lua_State *L;
    int level; /* captures open or closed so far */
    int depth; /* nested match calls left */
    long steps, limit, charged, checkpoint;
    struct {
        const char *init;
        ptrdiff_t len; /* or CAP_UNFINISHED, CAP_POSITION */
    } cap[MAXCAPTURES];
};

/* ---- The meter ---- */

static void meter_start(struct mstate *ms, lua_State *L, size_t subject_len) {
    const size_t cap = (size_t)(1L << 40) / MATCH_STEPS_PER_BYTE;
    ms->L = L;
    ms->steps = ms->charged = 0;
    ms->limit = MATCH_BASE_STEPS + MATCH_STEPS_PER_BYTE * (long)(subject_len < cap ? subject_len + 1 : cap);
    ms->checkpoint = MATCH_CHARGE_EVERY < ms->limit ? MATCH_CHARGE_EVERY : ms->limit + 1;
}

/* Charges what was spent since the last charge (which may end the run), then enforces the limit. */
static void checkpoint(struct mstate *ms) {
    sandbox_charge(ms->L, ms->steps - ms->charged);
    ms->charged = ms->steps;
    if (ms->steps > ms->limit)
        luaL_error(ms->L, "pattern too complex (over %I matcher steps for a subject of this length)",
                   (lua_Integer)ms->limit);
    ms->checkpoint = ms->steps + MATCH_CHARGE_EVERY;
    if (ms->checkpoint > ms->limit) ms->checkpoint = ms->limit + 1;
}

static void step(struct mstate *ms, ptrdiff_t n) {
    ms->steps += (long)n;
    if (ms->steps >= ms->checkpoint) checkpoint(ms);
}

static void meter_finish(struct mstate *ms) {
    if (ms->steps > ms->charged) sandbox_charge(ms->L, ms->steps - ms->charged);
    ms->charged = ms->steps;
}

/* ---- Matching ---- */

static void prepstate(struct mstate *ms, lua_State *L, const char *s, size_t ls, const char *p, size_t lp) {
    ms->src_init = s;
    ms->src_end = s + ls;
    ms->p_end = p + lp;
    meter_start(ms, L, ls);
}

static void reprepstate(struct mstate *ms) {
    ms->level = 0;
    ms->depth = MAXDEPTH;
}

static const char *match(struct mstate *ms, const char *s, const char *p);

static int check_capture(struct mstate *ms, int l) {
    l -= '1';
    if (l < 0 || l >= ms->level || ms->cap[l].len == CAP_UNFINISHED)
        return luaL_error(ms->L, "invalid capture index %%%d", l + 1);
    return l;
}

static int capture_to_close(struct mstate *ms) {
    int level = ms->level;
    for (level--; level >= 0; level--)
        if (ms->cap[level].len == CAP_UNFINISHED) return level;
    return luaL_error(ms->L, "invalid pattern capture");
}

/* The end of the single-character class that starts at p. Patterns are Lua strings, so *p_end
 * is a readable '\0'. */
static const char *class_end(struct mstate *ms, const char *p) {
    const char *start = p;
    char c = *p++;
    if (c == ESC) {
        if (p >= ms->p_end) luaL_error(ms->L, "malformed pattern (ends with '%%')");
        return p + 1;
    }
    if (c == '[') {
        if (*p == '^') p++;
        do { /* the first character is part of the set even if it is ']' */
            if (p >= ms->p_end) luaL_error(ms->L, "malformed pattern (missing ']')");
            c = *p++;
            if (c == ESC && p < ms->p_end) p++; /* '%]' */
        } while (p >= ms->p_end || *p != ']');
        step(ms, p - start);
        return p + 1;
    }
    return p;
}

static int match_class(int c, int cl) {
    int res;
    switch (tolower(cl)) {
    case 'a': res = isalpha(c); break;
    case 'c': res = iscntrl(c); break;
    case 'd': res = isdigit(c); break;
    case 'g': res = isgraph(c); break;
    case 'l': res = islower(c); break;
    case 'p': res = ispunct(c); break;
    case 's': res = isspace(c); break;
    case 'u': res = isupper(c); break;
    case 'w': res = isalnum(c); break;
    case 'x': res = isxdigit(c); break;
    default: return cl == c;
    }
    if (isupper(cl)) res = !res;
    return res;
}

/* p is the '[' of a set, ec its ']'. */
static int match_bracket_class(int c, const char *p, const char *ec) {
    int sig = 1;
    if (*(p + 1) == '^') {
        sig = 0;
        p++;
    }
    while (++p < ec) {
        if (*p == ESC) {
            p++;
            if (match_class(c, uchar(*p))) return sig;
        } else if (*(p + 1) == '-' && p + 2 < ec) {
            p += 2;
            if (uchar(*(p - 2)) <= c && c <= uchar(*p)) return sig;
        } else if (uchar(*p) == c) {
            return sig;
        }
    }
    return !sig;
}

static int single_match(struct mstate *ms, const char *s, const char *p, const char *ep) {
    step(ms, *p == '[' ? ep - p : 1);
    if (s >= ms->src_end) return 0;
    int c = uchar(*s);
    switch (*p) {
    case '.': return 1;
    case ESC: return match_class(c, uchar(*(p + 1)));
    case '[': return match_bracket_class(c, p, ep - 1);
    default: return uchar(*p) == c;
    }
}

static const char *match_balance(struct mstate *ms, const char *s, const char *p) {
    if (p >= ms->p_end - 1) luaL_error(ms->L, "malformed pattern (missing arguments to '%%b')");
    if (s >= ms->src_end || *s != *p) return NULL;
    const char *start = s;
    int b = *p, e = *(p + 1), cont = 1;
    while (++s < ms->src_end) {
        if (*s == e) {
            if (--cont == 0) {
                step(ms, s - start);
                return s + 1;
            }
        } else if (*s == b) {
            cont++;
        }
    }
    step(ms, s - start);
    return NULL;
}

static const char *max_expand(struct mstate *ms, const char *s, const char *p, const char *ep) {
    ptrdiff_t i = 0;
    while (single_match(ms, s + i, p, ep)) i++;
    while (i >= 0) { /* try the rest with the longest run first */
        const char *res = match(ms, s + i, ep + 1);
        if (res != NULL) return res;
        i--;
    }
    return NULL;
}

static const char *min_expand(struct mstate *ms, const char *s, const char *p, const char *ep) {
    for (;;) {
        const char *res = match(ms, s, ep + 1);
        if (res != NULL) return res;
        if (!single_match(ms, s, p, ep)) return NULL;
        s++;
    }
}

static const char *start_capture(struct mstate *ms, const char *s, const char *p, int what) {
    if (ms->level >= MAXCAPTURES) luaL_error(ms->L, "too many captures");
    ms->cap[ms->level].init = s;
    ms->cap[ms->level].len = what;
    ms->level++;
    const char *res = match(ms, s, p);
    if (res == NULL) ms->level--; /* undo */
    return res;
}

static const char *end_capture(struct mstate *ms, const char *s, const char *p) {
    int l = capture_to_close(ms);
    ms->cap[l].len = s - ms->cap[l].init;
    const char *res = match(ms, s, p);
    if (res == NULL) ms->cap[l].len = CAP_UNFINISHED; /* undo */
    return res;
}

static const char *match_capture(struct mstate *ms, const char *s, int l) {
    l = check_capture(ms, l);
    size_t len = (size_t)ms->cap[l].len; /* a position capture becomes huge: never matches, as in Lua */
    if ((size_t)(ms->src_end - s) >= len) {
        step(ms, (ptrdiff_t)len);
        if (memcmp(ms->cap[l].init, s, len) == 0) return s + len;
    }
    return NULL;
}

/* Matches pattern p against the subject at s: the end of the match, or NULL. */
static const char *match(struct mstate *ms, const char *s, const char *p) {
    if (ms->depth-- == 0) luaL_error(ms->L, "pattern too complex");
    step(ms, 1);
init: /* the tail calls of a sequence loop here instead of recursing */
    if (p != ms->p_end) {
        switch (*p) {
        case '(':
            if (*(p + 1) == ')')
                s = start_capture(ms, s, p + 2, CAP_POSITION);
            else
                s = start_capture(ms, s, p + 1, CAP_UNFINISHED);
            break;
        case ')':
            s = end_capture(ms, s, p + 1);
            break;
        case '$':
            if (p + 1 != ms->p_end) goto dflt; /* not at the end: a literal '$' */
            s = (s == ms->src_end) ? s : NULL;
            break;
        case ESC:
            switch (*(p + 1)) {
            case 'b':
                s = match_balance(ms, s, p + 2);
                if (s != NULL) {
                    p += 4;
                    goto init;
                }
                break;
            case 'f': {
                p += 2;
                if (*p != '[') luaL_error(ms->L, "missing '[' after '%%f' in pattern");
                const char *ep = class_end(ms, p);
                int previous = (s == ms->src_init) ? '\0' : uchar(*(s - 1));
                step(ms, 2 * (ep - p));
                /* at the end of the subject the current character is its '\0', as in Lua */
                if (!match_bracket_class(previous, p, ep - 1) && match_bracket_class(uchar(*s), p, ep - 1)) {
                    p = ep;
                    goto init;
                }
                s = NULL;
                break;
            }
            case '0': case '1': case '2': case '3': case '4':
            case '5': case '6': case '7': case '8': case '9':
                s = match_capture(ms, s, uchar(*(p + 1)));
                if (s != NULL) {
                    p += 2;
                    goto init;
                }
                break;
            default:
                goto dflt;
            }
            break;
        default:
        dflt: {
            const char *ep = class_end(ms, p);
            if (!single_match(ms, s, p, ep)) {
                if (*ep == '*' || *ep == '?' || *ep == '-') { /* accepts zero repetitions */
                    p = ep + 1;
                    goto init;
                }
                s = NULL;
            } else {
                switch (*ep) {
                case '?': {
                    const char *res = match(ms, s + 1, ep + 1);
                    if (res != NULL) {
                        s = res;
                    } else {
                        p = ep + 1;
                        goto init;
                    }
                    break;
                }
                case '+': s = max_expand(ms, s + 1, p, ep); break;
                case '*': s = max_expand(ms, s, p, ep); break;
                case '-': s = min_expand(ms, s, p, ep); break;
                default:
                    s++;
                    p = ep;
                    goto init;
                }
            }
            break;
        }
        }
    }
    ms->depth++;
    return s;
}

/* ---- Captures ---- */

/* Capture i as (*cap, length); a position capture is pushed instead and CAP_POSITION returned. */
static ptrdiff_t get_onecapture(struct mstate *ms, int i, const char *s, const char *e, const char **cap) {
    if (i >= ms->level) {
        if (i != 0) luaL_error(ms->L, "invalid capture index %%%d", i + 1);
        *cap = s; /* no captures: the whole match */
        return e - s;
    }
    ptrdiff_t capl = ms->cap[i].len;
    *cap = ms->cap[i].init;
    if (capl == CAP_UNFINISHED)
        luaL_error(ms->L, "unfinished capture");
    else if (capl == CAP_POSITION)
        lua_pushinteger(ms->L, (ms->cap[i].init - ms->src_init) + 1);
    return capl;
}

static void push_onecapture(struct mstate *ms, int i, const char *s, const char *e) {
    const char *cap;
    ptrdiff_t l = get_onecapture(ms, i, s, e, &cap);
    if (l != CAP_POSITION) lua_pushlstring(ms->L, cap, (size_t)l);
}

static int push_captures(struct mstate *ms, const char *s, const char *e) {
    int nlevels = (ms->level == 0 && s) ? 1 : ms->level;
    luaL_checkstack(ms->L, nlevels, "too many captures");
    for (int i = 0; i < nlevels; i++) push_onecapture(ms, i, s, e);
    return nlevels;
}

/* ---- The library functions ---- */

/* A 1-based position relative to len (negative: from the end), clipped to [1, inf). */
static size_t posrelat(lua_Integer pos, size_t len) {
    if (pos > 0) return (size_t)pos;
    if (pos == 0) return 1;
    if (pos < -(lua_Integer)len) return 1;
    return len + (size_t)pos + 1;
}

static int nospecials(const char *p, size_t l) {
    for (size_t i = 0; i < l; i++)
        if (p[i] != '\0' && strchr(SPECIALS, p[i]) != NULL) return 0;
    return 1;
}

static int find_aux(lua_State *L, int find) {
    size_t ls, lp;
    const char *s = luaL_checklstring(L, 1, &ls);
    const char *p = luaL_checklstring(L, 2, &lp);
    size_t init = posrelat(luaL_optinteger(L, 3, 1), ls) - 1;
    if (init > ls) {
        luaL_pushfail(L);
        return 1;
    }
    if (find && (lua_toboolean(L, 4) || nospecials(p, lp))) {
        const char *s2 = memmem(s + init, ls - init, p, lp); /* two-way: linear, unlike a naive scan */
        sandbox_charge(L, (long)((ls - init) / 64));
        if (s2 != NULL) {
            lua_pushinteger(L, (s2 - s) + 1);
            lua_pushinteger(L, (lua_Integer)((size_t)(s2 - s) + lp));
            return 2;
        }
    } else {
        struct mstate ms;
        const char *s1 = s + init;
        int anchor = (*p == '^');
        if (anchor) {
            p++;
            lp--;
        }
        prepstate(&ms, L, s, ls, p, lp);
        do {
            reprepstate(&ms);
            const char *res = match(&ms, s1, p);
            if (res != NULL) {
                meter_finish(&ms);
                if (find) {
                    lua_pushinteger(L, (s1 - s) + 1);
                    lua_pushinteger(L, res - s);
                    return push_captures(&ms, NULL, 0) + 2;
                }
                return push_captures(&ms, s1, res);
            }
        } while (s1++ < ms.src_end && !anchor);
        meter_finish(&ms);
    }
    luaL_pushfail(L);
    return 1;
}

static int l_find(lua_State *L) {
    return find_aux(L, 1);
}

static int l_match(lua_State *L) {
    return find_aux(L, 0);
}

struct gmatch_state {
    const char *src;       /* where the next search starts */
    const char *p;         /* the pattern */
    const char *lastmatch; /* end of the last match: an empty match there does not count */
    struct mstate ms;
};

/* upvalues: subject, pattern (kept alive for the pointers), state */
static int gmatch_aux(lua_State *L) {
    struct gmatch_state *gm = lua_touserdata(L, lua_upvalueindex(3));
    /* the iterator may run in another coroutine than the one that made it */
    meter_start(&gm->ms, L, gm->src <= gm->ms.src_end ? (size_t)(gm->ms.src_end - gm->src) : 0);
    for (const char *src = gm->src; src <= gm->ms.src_end; src++) {
        reprepstate(&gm->ms);
        const char *e = match(&gm->ms, src, gm->p);
        if (e != NULL && e != gm->lastmatch) {
            gm->src = gm->lastmatch = e;
            meter_finish(&gm->ms);
            return push_captures(&gm->ms, src, e);
        }
    }
    meter_finish(&gm->ms);
    return 0;
}

static int l_gmatch(lua_State *L) {
    size_t ls, lp;
    const char *s = luaL_checklstring(L, 1, &ls);
    const char *p = luaL_checklstring(L, 2, &lp);
    size_t init = posrelat(luaL_optinteger(L, 3, 1), ls) - 1;
    lua_settop(L, 2);
    struct gmatch_state *gm = lua_newuserdatauv(L, sizeof *gm, 0);
    if (init > ls) init = ls + 1; /* start after the end: no matches */
    prepstate(&gm->ms, L, s, ls, p, lp);
    gm->src = s + init;
    gm->p = p;
    gm->lastmatch = NULL;
    lua_pushcclosure(L, gmatch_aux, 3);
    return 1;
}

static void add_s(struct mstate *ms, luaL_Buffer *b, const char *s, const char *e) {
    size_t l;
    lua_State *L = ms->L;
    const char *news = lua_tolstring(L, 3, &l);
    const char *p;
    step(ms, (ptrdiff_t)l);
    while ((p = memchr(news, ESC, l)) != NULL) {
        luaL_addlstring(b, news, (size_t)(p - news));
        p++; /* the character after '%': the replacement's '\0' if '%' was last */
        if (*p == ESC) {
            luaL_addchar(b, *p);
        } else if (*p == '0') {
            luaL_addlstring(b, s, (size_t)(e - s));
        } else if (isdigit(uchar(*p))) {
            const char *cap;
            ptrdiff_t resl = get_onecapture(ms, *p - '1', s, e, &cap);
            if (resl == CAP_POSITION)
                luaL_addvalue(b);
            else
                luaL_addlstring(b, cap, (size_t)resl);
        } else {
            luaL_error(L, "invalid use of '%c' in replacement string", ESC);
        }
        l -= (size_t)(p + 1 - news);
        news = p + 1;
    }
    luaL_addlstring(b, news, l);
}

/* Adds the replacement of the match [s, e) to b. Returns whether anything changed. */
static int add_value(struct mstate *ms, luaL_Buffer *b, const char *s, const char *e, int tr) {
    lua_State *L = ms->L;
    switch (tr) {
    case LUA_TFUNCTION: {
        lua_pushvalue(L, 3);
        int n = push_captures(ms, s, e);
        lua_call(L, n, 1);
        break;
    }
    case LUA_TTABLE:
        push_onecapture(ms, 0, s, e);
        lua_gettable(L, 3);
        break;
    default:
        add_s(ms, b, s, e);
        return 1;
    }
    if (!lua_toboolean(L, -1)) { /* nil or false: keep the original text */
        lua_pop(L, 1);
        luaL_addlstring(b, s, (size_t)(e - s));
        return 0;
    }
    if (!lua_isstring(L, -1)) return luaL_error(L, "invalid replacement value (a %s)", luaL_typename(L, -1));
    luaL_addvalue(b);
    return 1;
}

static int l_gsub(lua_State *L) {
    size_t srcl, lp;
    const char *src = luaL_checklstring(L, 1, &srcl);
    const char *p = luaL_checklstring(L, 2, &lp);
    const char *lastmatch = NULL;
    int tr = lua_type(L, 3);
    lua_Integer max_s = luaL_optinteger(L, 4, (lua_Integer)srcl + 1);
    int anchor = (*p == '^');
    lua_Integer n = 0;
    int changed = 0;
    struct mstate ms;
    luaL_Buffer b;
    luaL_argexpected(L, tr == LUA_TNUMBER || tr == LUA_TSTRING || tr == LUA_TFUNCTION || tr == LUA_TTABLE, 3,
                     "string/function/table");
    luaL_buffinit(L, &b);
    if (anchor) {
        p++;
        lp--;
    }
    prepstate(&ms, L, src, srcl, p, lp);
    while (n < max_s) {
        reprepstate(&ms);
        const char *e = match(&ms, src, p);
        if (e != NULL && e != lastmatch) {
            n++;
            changed = add_value(&ms, &b, src, e, tr) | changed;
            src = lastmatch = e;
        } else if (src < ms.src_end) {
            luaL_addchar(&b, *src++);
        } else {
            break;
        }
        if (anchor) break;
    }
    meter_finish(&ms);
    if (!changed) {
        lua_pushvalue(L, 1);
    } else {
        luaL_addlstring(&b, src, (size_t)(ms.src_end - src));
        luaL_pushresult(&b);
    }
    lua_pushinteger(L, n);
    return 2;
}

void sandbox_match_install(lua_State *L, int idx) {
    static const luaL_Reg fns[] = {
        {"find", l_find},
        {"match", l_match},
        {"gmatch", l_gmatch},
        {"gsub", l_gsub},
        {NULL, NULL},
    };
    idx = lua_absindex(L, idx);
    for (const luaL_Reg *f = fns; f->name != NULL; f++) {
        lua_pushcfunction(L, f->func);
        lua_setfield(L, idx, f->name);
    }
}
