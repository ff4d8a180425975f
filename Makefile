# spillagg: PGXS build of a C++17 PostgreSQL extension.
EXTENSION  = spillagg
MODULE_big = spillagg
DATA       = sql/spillagg--0.1.sql
# The 0.2 install and upgrade scripts are generated from one table of
# aggregates (sql/generate.pl); every object is listed explicitly in them.
DATA_built = sql/spillagg--0.2.sql sql/spillagg--0.1--0.2.sql
OBJS       = src/core/states.o src/core/decimal.o src/pg/module.o src/pg/key_type.o src/pg/temp_file_store.o \
             src/pg/count_aggs.o src/pg/map_aggs.o src/pg/top_k.o \
             src/pg/partial_states.o src/pg/query_budget.o \
             src/pg/stored_state.o src/pg/expanded_state.o src/pg/parallel_exchange.o
HEADERS    = $(wildcard src/core/*.h src/pg/*.h)

REGRESS      = count_distinct count_map keys spill family parallel two_step plan_shapes key_shapes security parity exchange
REGRESS_OPTS = --inputdir=. --outputdir=.
TAP_TESTS    = 1
PROVE_TESTS  = test/t/*.pl

PG_CONFIG ?= pg_config
PG_CPPFLAGS = -Isrc/core -Isrc/pg
PG_CXXFLAGS = -std=c++17 -Wno-register -fno-omit-frame-pointer -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers
SHLIB_LINK  = -lstdc++

PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# The LLVM bitcode rule (JIT inlining) ignores PG_CXXFLAGS; see NOTES-pg-cpp.md.
override BITCODE_CXXFLAGS += -std=c++17 -Wno-register -Isrc/core -Isrc/pg

$(OBJS): $(HEADERS)

sql/spillagg--0.2.sql: sql/generate.pl
	perl sql/generate.pl install > $@
sql/spillagg--0.1--0.2.sql: sql/generate.pl
	perl sql/generate.pl upgrade-0.1 > $@

.PHONY: unittest
unittest:
	$(MAKE) -C test/unit check
