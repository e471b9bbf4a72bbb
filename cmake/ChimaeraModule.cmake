# Helpers for building ChiMods. The same calls work in the Chimaera source tree
# and in an out-of-tree project that did find_package(chimaera CONFIG).
#
# add_chimod_client(<mod> [SOURCES <src>...] [LINK <lib>...] [INCLUDE <dir>...]
#                   [INSTALL_HEADERS <dir>...] [NO_INSTALL])
#   Builds lib<mod>_client.so: the client API of module <mod>, compiled with
#   CHIMAERA_RUNTIME=0 and linked to chimaera::chimaera_client. Without
#   SOURCES (a header-only client) <mod>_client is an INTERFACE library that
#   carries the include directories and chimaera::chimaera_client.
#   The module's headers are installed to the include directory: the
#   contents of each INSTALL_HEADERS directory, or by default of include/
#   beside the calling CMakeLists.txt (if it exists), so that programs built
#   against the installed tree can #include "<mod>/<mod>_client.h".
#
# add_chimod_runtime(<mod> SOURCES <src>... [LINK <lib>...] [INCLUDE <dir>...]
#                    [NO_INSTALL])
#   Builds lib<mod>_runtime.so: the container of module <mod> (one of its
#   sources uses CHI_MODULE or CHI_TASK_CC), compiled with
#   CHIMAERA_RUNTIME=1 and linked to chimaera::chimaera_runtime. The runtime dlopens it by module name.
#
# Both install their shared library to the library directory. Runtime
# libraries are plug-ins, never exported. Client libraries are exported only
# by Chimaera's own build (CHIMAERA_CHIMOD_EXPORT names its export set), so
# that the shipped ChiMods' clients are chimaera::<mod>_client in the
# installed package; an out-of-tree project links its own <mod>_client by
# its plain name. Both require C++17 of what they build and of what links
# them. NO_INSTALL installs neither library nor headers.
include_guard(GLOBAL)
include(GNUInstallDirs)

function(_chimod_add_library mod kind runtime_flag base_target)
  cmake_parse_arguments(ARG "NO_INSTALL" "" "SOURCES;LINK;INCLUDE;INSTALL_HEADERS"
                        ${ARGN})
  if(ARG_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR
      "add_chimod_${kind}(${mod}): unexpected arguments ${ARG_UNPARSED_ARGUMENTS}")
  endif()
  set(tgt ${mod}_${kind})
  if(ARG_INSTALL_HEADERS AND NOT kind STREQUAL "client")
    message(FATAL_ERROR
      "add_chimod_${kind}(${mod}): INSTALL_HEADERS belongs to add_chimod_client")
  endif()
  if(kind STREQUAL "client" AND NOT ARG_NO_INSTALL)
    _chimod_install_headers(${mod} ${ARG_INSTALL_HEADERS})
  endif()
  if(NOT ARG_SOURCES)
    if(kind STREQUAL "runtime")
      message(FATAL_ERROR "add_chimod_runtime(${mod}): SOURCES is required")
    endif()
    # Header-only client.
    add_library(${tgt} INTERFACE)
    target_link_libraries(${tgt} INTERFACE ${base_target} ${ARG_LINK})
    target_include_directories(${tgt} INTERFACE
        $<BUILD_INTERFACE:${CMAKE_CURRENT_SOURCE_DIR}/include> ${ARG_INCLUDE})
    target_compile_features(${tgt} INTERFACE cxx_std_17)
    _chimod_export_client(${tgt} ${kind} ${ARG_NO_INSTALL})
    return()
  endif()
  add_library(${tgt} SHARED ${ARG_SOURCES})
  target_link_libraries(${tgt} PUBLIC ${base_target} ${ARG_LINK})
  target_compile_definitions(${tgt} PRIVATE CHIMAERA_RUNTIME=${runtime_flag})
  target_include_directories(${tgt} PUBLIC
      $<BUILD_INTERFACE:${CMAKE_CURRENT_SOURCE_DIR}/include> ${ARG_INCLUDE})
  target_compile_features(${tgt} PUBLIC cxx_std_17)
  if(CHIMAERA_MODULE_OUTPUT_DIR)
    set_target_properties(${tgt} PROPERTIES
        LIBRARY_OUTPUT_DIRECTORY ${CHIMAERA_MODULE_OUTPUT_DIR})
  endif()
  if(NOT ARG_NO_INSTALL AND NOT (kind STREQUAL "client" AND
                                  CHIMAERA_CHIMOD_EXPORT))
    install(TARGETS ${tgt} LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
  endif()
  _chimod_export_client(${tgt} ${kind} ${ARG_NO_INSTALL})
endfunction()

# In Chimaera's own build (CHIMAERA_CHIMOD_EXPORT set), installs client
# target `tgt` into that export set, with the installed include directory,
# and names it chimaera::<tgt> in the build tree too, as in the package.
function(_chimod_export_client tgt kind no_install)
  if(NOT kind STREQUAL "client" OR NOT CHIMAERA_CHIMOD_EXPORT OR no_install)
    return()
  endif()
  get_target_property(type ${tgt} TYPE)
  if(type STREQUAL "INTERFACE_LIBRARY")
    target_include_directories(${tgt} INTERFACE
        $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
  else()
    target_include_directories(${tgt} PUBLIC
        $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
  endif()
  add_library(chimaera::${tgt} ALIAS ${tgt})
  install(TARGETS ${tgt} EXPORT ${CHIMAERA_CHIMOD_EXPORT}
          LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
endfunction()

# Installs a client's headers: the contents of each directory given, or of
# include/ beside the calling CMakeLists.txt when none is.
function(_chimod_install_headers mod)
  set(dirs ${ARGN})
  if(NOT dirs AND IS_DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR}/include)
    set(dirs ${CMAKE_CURRENT_SOURCE_DIR}/include)
  endif()
  foreach(dir IN LISTS dirs)
    if(NOT IS_ABSOLUTE "${dir}")
      set(dir ${CMAKE_CURRENT_SOURCE_DIR}/${dir})
    endif()
    if(NOT IS_DIRECTORY "${dir}")
      message(FATAL_ERROR
        "add_chimod_client(${mod}): INSTALL_HEADERS ${dir} is not a directory")
    endif()
    install(DIRECTORY ${dir}/ DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
            FILES_MATCHING PATTERN "*.h" PATTERN "*.hpp" PATTERN "*.hh")
  endforeach()
endfunction()

function(add_chimod_client mod)
  _chimod_add_library(${mod} client 0 chimaera::chimaera_client ${ARGN})
endfunction()

function(add_chimod_runtime mod)
  _chimod_add_library(${mod} runtime 1 chimaera::chimaera_runtime ${ARGN})
endfunction()
