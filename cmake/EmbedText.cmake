# cmake -DINPUT=<file> -DOUTPUT=<header> -DSYMBOL=<name> -P EmbedText.cmake
# Writes <header> declaring `inline constexpr const char <SYMBOL>[]` holding
# the contents of <file>, so a YAML default and its C++ constant never drift.
file(READ "${INPUT}" content)
set(delim "chimaera_embed")
string(FIND "${content}" ")${delim}\"" clash)
if(NOT clash EQUAL -1)
  message(FATAL_ERROR "${INPUT} contains the raw-string delimiter")
endif()
get_filename_component(name "${INPUT}" NAME)
file(WRITE "${OUTPUT}.tmp"
"// Generated at build time from ${name}; do not edit.\n"
"#pragma once\n\n"
"namespace chi {\n"
"inline constexpr const char ${SYMBOL}[] = R\"${delim}(${content})${delim}\";\n"
"}  // namespace chi\n")
file(COPY_FILE "${OUTPUT}.tmp" "${OUTPUT}" ONLY_IF_DIFFERENT)
file(REMOVE "${OUTPUT}.tmp")
