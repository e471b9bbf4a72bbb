# Reads KEY=VALUE lines from a dotenv file into the CMake process environment.
#
# chimaera_load_dotenv(<file>)
#   - A missing file is fine (nothing happens).
#   - Blank lines and lines starting with '#' are ignored.
#   - A value may be wrapped in single or double quotes; the quotes are removed.
#   - ${VAR} inside a value expands from the environment as it is at that line.
#   - Any other line is a configure error that names the file and line number.
# Paths added to CMAKE_PREFIX_PATH in the file are also appended to the CMake
# variable of that name, so find_package sees them.
function(chimaera_load_dotenv file)
  if(NOT EXISTS "${file}")
    message(STATUS "chimaera: no ${file}; skipping dotenv")
    return()
  endif()
  file(STRINGS "${file}" lines)
  set(lineno 0)
  foreach(line IN LISTS lines)
    math(EXPR lineno "${lineno} + 1")
    string(STRIP "${line}" line)
    if(line STREQUAL "" OR line MATCHES "^#")
      continue()
    endif()
    if(NOT line MATCHES "^(export[ \t]+)?([A-Za-z_][A-Za-z0-9_]*)[ \t]*=(.*)$")
      message(FATAL_ERROR
        "${file}:${lineno}: malformed line '${line}' (expected KEY=VALUE)")
    endif()
    set(key "${CMAKE_MATCH_2}")
    string(STRIP "${CMAKE_MATCH_3}" value)
    # Separate tests: with OR, CMAKE_MATCH_1 would come from the last one.
    if(value MATCHES "^\"(.*)\"$")
      set(value "${CMAKE_MATCH_1}")
    elseif(value MATCHES "^'(.*)'$")
      set(value "${CMAKE_MATCH_1}")
    endif()
    # Expand ${VAR} from the environment.
    set(rounds 0)
    while(value MATCHES "\\$\\{([A-Za-z_][A-Za-z0-9_]*)\\}")
      set(var "${CMAKE_MATCH_1}")
      math(EXPR rounds "${rounds} + 1")
      if(rounds GREATER 64)
        message(FATAL_ERROR "${file}:${lineno}: \${...} expansion does not end")
      endif()
      string(REPLACE "\${${var}}" "$ENV{${var}}" value "${value}")
    endwhile()
    set(ENV{${key}} "${value}")
    message(STATUS "chimaera: dotenv ${key}=${value}")
    if(key STREQUAL "CMAKE_PREFIX_PATH")
      string(REPLACE ":" ";" prefixes "${value}")
      list(APPEND CMAKE_PREFIX_PATH ${prefixes})
      set(CMAKE_PREFIX_PATH "${CMAKE_PREFIX_PATH}" PARENT_SCOPE)
    endif()
  endforeach()
endfunction()
