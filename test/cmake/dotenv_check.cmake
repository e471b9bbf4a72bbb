# cmake -DDOTENV=<file> -DEXPECT_KEY=<k> -DEXPECT_VALUE=<v> -P dotenv_check.cmake
# Loads <file> with chimaera_load_dotenv and checks that <k> became <v>.
include(${CMAKE_CURRENT_LIST_DIR}/../../cmake/ChimaeraDotenv.cmake)
chimaera_load_dotenv("${DOTENV}")
if(DEFINED EXPECT_KEY AND NOT "$ENV{${EXPECT_KEY}}" STREQUAL "${EXPECT_VALUE}")
  message(FATAL_ERROR "${EXPECT_KEY}='$ENV{${EXPECT_KEY}}', want '${EXPECT_VALUE}'")
endif()
message(STATUS "dotenv check passed")
