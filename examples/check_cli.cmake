# cmake -DPROGRAM=<exe> -DARGS=<list, semicolons escaped as \;> -DINPUT=<file> -DEXPECT_EXIT=<code> [-DEXPECT_OUTPUT=<file>]
#       [-DEXPECT_OUTPUT_CONTAINS=<file>] [-DEXPECT_NUMBERS=<file> -DCOMPARE=<compare_numbers exe> -DTOLERANCE=<t>]
#       [-DEXPECT_ERROR=<regex>] -P check_cli.cmake
# Runs PROGRAM with ARGS and INPUT on stdin; fails unless the exit code is EXPECT_EXIT, stdout equals the file
# EXPECT_OUTPUT byte for byte (when given), stdout holds the bytes of EXPECT_OUTPUT_CONTAINS (when given), stdout's numbers equal EXPECT_NUMBERS's within TOLERANCE by
# COMPARE (when given) and stderr matches EXPECT_ERROR (when given; empty on success).
foreach(required PROGRAM INPUT EXPECT_EXIT)
  if(NOT DEFINED ${required})
    message(FATAL_ERROR "check_cli.cmake: -D${required}=... is required")
  endif()
endforeach()

# add_test would split a plain list into separate arguments of cmake, so the caller escapes its semicolons.
string(REPLACE "\\;" ";" arguments "${ARGS}")
execute_process(COMMAND "${PROGRAM}" ${arguments}
                INPUT_FILE "${INPUT}"
                OUTPUT_VARIABLE actual_output
                ERROR_VARIABLE actual_error
                RESULT_VARIABLE actual_exit)

set(failures "")
if(NOT actual_exit STREQUAL EXPECT_EXIT)
  string(APPEND failures "exit code: expected ${EXPECT_EXIT}, got ${actual_exit}\n")
endif()
if(DEFINED EXPECT_OUTPUT)
  file(READ "${EXPECT_OUTPUT}" expected_output)
  if(NOT actual_output STREQUAL expected_output)
    string(APPEND failures "stdout differs from ${EXPECT_OUTPUT}:\n--- expected\n${expected_output}--- got\n"
                           "${actual_output}---\n")
  endif()
endif()
if(DEFINED EXPECT_OUTPUT_CONTAINS)
  file(READ "${EXPECT_OUTPUT_CONTAINS}" expected_part)
  string(FIND "${actual_output}" "${expected_part}" found_at)
  if(found_at EQUAL -1)
    string(APPEND failures "stdout does not contain ${EXPECT_OUTPUT_CONTAINS}:\n--- expected part\n${expected_part}\n"
                           "--- got\n${actual_output}---\n")
  endif()
endif()
if(DEFINED EXPECT_NUMBERS)
  string(MD5 output_name "${PROGRAM};${ARGS};${INPUT}")
  set(actual_file "${CMAKE_CURRENT_BINARY_DIR}/check_cli_${output_name}.txt")
  file(WRITE "${actual_file}" "${actual_output}")
  execute_process(COMMAND "${COMPARE}" "${actual_file}" "${EXPECT_NUMBERS}" "${TOLERANCE}"
                  OUTPUT_VARIABLE compare_output ERROR_VARIABLE compare_output RESULT_VARIABLE compare_exit)
  file(REMOVE "${actual_file}")
  if(NOT compare_exit EQUAL 0)
    string(APPEND failures "stdout differs from ${EXPECT_NUMBERS}: ${compare_output}")
  endif()
endif()
if(DEFINED EXPECT_ERROR)
  if(NOT actual_error MATCHES "${EXPECT_ERROR}")
    string(APPEND failures "stderr does not match \"${EXPECT_ERROR}\"\n")
  endif()
elseif(EXPECT_EXIT EQUAL 0 AND NOT actual_error STREQUAL "")
  string(APPEND failures "stderr should be empty on success\n")
endif()

if(NOT failures STREQUAL "")
  string(REPLACE ";" " " shown_args "${arguments}")
  message(FATAL_ERROR "${PROGRAM} ${shown_args} < ${INPUT}\n${failures}stderr:\n${actual_error}")
endif()
