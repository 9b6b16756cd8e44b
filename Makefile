# Orrery — every entry point. `make run` and `make test` are the two a user needs;
# both install what is missing first (make deps).
SHELL := /bin/bash
.DEFAULT_GOAL := build

PKGS := lua5.4 lua5.4-cjson libmicrohttpd libpq jansson libjwt libargon2 libcurl zlib libcrypto
# Recursively expanded on purpose: pkg-config must run after `make deps` installed the packages.
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS))
PKG_LIBS   = $(shell pkg-config --libs $(PKGS))
# core.so is loaded into the lua5.4 interpreter, which carries its own Lua: never link liblua into it.
MOD_LIBS   = $(filter-out -llua5.4,$(PKG_LIBS))

CC      ?= cc
WARN    := -std=c11 -Wall -Wextra -Werror -Wshadow -Wformat=2 -Wno-format-nonliteral
CFLAGS  ?= -O2 -g
ALL_CFLAGS = $(WARN) -D_GNU_SOURCE -fPIC -pthread $(CFLAGS) $(PKG_CFLAGS)
SAN     := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer

SRCS      := $(sort $(wildcard src/*.c))
LIB_SRCS  := $(filter-out src/main.c src/lua_core.c,$(SRCS))

# $(1) = build dir, $(2) = extra flags
define build_tree
$(1)/obj/%.o: src/%.c $(wildcard src/*.h) | $(1)/obj
	$$(CC) $$(ALL_CFLAGS) $(2) -c $$< -o $$@
$(1)/obj:
	@mkdir -p $$@ $(1)/bin $(1)/lua/orrery
$(1)/bin/orrery: $(patsubst src/%.c,$(1)/obj/%.o,$(LIB_SRCS) src/main.c)
	$$(CC) $(2) -pthread $$^ -o $$@ $$(PKG_LIBS) -lm
$(1)/obj/bench_hello.o: bench/hello.c src/http.h | $(1)/obj
	$$(CC) $$(ALL_CFLAGS) $(2) -c $$< -o $$@
$(1)/bin/orrery-bench-hello: $(1)/obj/bench_hello.o $(patsubst src/%.c,$(1)/obj/%.o,$(LIB_SRCS))
	$$(CC) $(2) -pthread $$^ -o $$@ $$(PKG_LIBS) -lm
$(1)/lua/orrery/core.so: $(patsubst src/%.c,$(1)/obj/%.o,$(LIB_SRCS) src/lua_core.c)
	$$(CC) $(2) -shared -pthread $$^ -o $$@ $$(MOD_LIBS) -lm
endef
$(eval $(call build_tree,build,))
$(eval $(call build_tree,build-asan,$(SAN) -O1))

.PHONY: deps build build-asan run test test-asan bench db-start db-stop migrate clean ui lint

deps:
	@scripts/deps.sh

build: deps
	@$(MAKE) --no-print-directory build/bin/orrery build/lua/orrery/core.so

build-asan: deps
	@$(MAKE) --no-print-directory build-asan/bin/orrery build-asan/lua/orrery/core.so

db-start: deps
	@scripts/db.sh start

db-stop:
	@scripts/db.sh stop

migrate: build db-start
	@scripts/run.sh migrate

run: build db-start
	@scripts/run.sh serve

test: build db-start
	@scripts/test.sh build

test-asan: build build-asan db-start
	@scripts/test.sh build-asan

bench: build db-start
	@$(MAKE) --no-print-directory build/bin/orrery-bench-hello
	@scripts/bench.sh

lint: deps
	luacheck $(wildcard lib spec agents)

clean:
	rm -rf build build-asan
