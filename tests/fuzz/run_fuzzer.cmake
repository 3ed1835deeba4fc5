# Runs one libFuzzer harness for ctest (cmake -P). Variables: FUZZER (the program), CORPUS (committed seeds),
# REGRESSIONS (committed crash inputs), DICTIONARY, WORK (a folder in the build tree), LIMITS (libFuzzer flags),
# MODE: "fuzz" fuzzes for SECONDS on a fresh copy of the seeds in WORK/corpus (the source tree is never written;
# the regression inputs stay out, as some are large and libFuzzer's -max_len follows the largest input);
# "replay" runs each committed seed and regression input once, without mutation.
cmake_minimum_required(VERSION 3.25)
file(MAKE_DIRECTORY "${WORK}/artifacts")
separate_arguments(limits UNIX_COMMAND "${LIMITS}")
set(flags ${limits} "-artifact_prefix=${WORK}/artifacts/")
if(EXISTS "${DICTIONARY}")
  list(APPEND flags "-dict=${DICTIONARY}")
endif()

file(GLOB seeds LIST_DIRECTORIES false "${CORPUS}/*")
file(GLOB regressions LIST_DIRECTORIES false "${REGRESSIONS}/*")
list(FILTER regressions EXCLUDE REGEX "/(README[^/]*|\\.gitkeep)$")

if(MODE STREQUAL "fuzz")
  file(REMOVE_RECURSE "${WORK}/corpus")
  file(MAKE_DIRECTORY "${WORK}/corpus")
  if(seeds)
    file(COPY ${seeds} DESTINATION "${WORK}/corpus")
  endif()
  execute_process(COMMAND "${FUZZER}" ${flags} -max_total_time=${SECONDS} -print_final_stats=1 "${WORK}/corpus"
                  RESULT_VARIABLE result)
elseif(MODE STREQUAL "replay")
  if(NOT (seeds OR regressions))
    message(FATAL_ERROR "no inputs in ${CORPUS} or ${REGRESSIONS}")
  endif()
  # Files (not folders) as arguments: libFuzzer runs each once and writes nothing.
  execute_process(COMMAND "${FUZZER}" ${flags} ${seeds} ${regressions} RESULT_VARIABLE result)
else()
  message(FATAL_ERROR "MODE must be fuzz or replay, got \"${MODE}\"")
endif()
if(NOT result EQUAL 0)
  message(FATAL_ERROR "${FUZZER} failed (${result}); crash inputs are in ${WORK}/artifacts")
endif()
