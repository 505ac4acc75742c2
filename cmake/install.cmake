# `cmake --install` puts headers, the library and a package config in place, so a user's project can say
# find_package(ioattn CONFIG REQUIRED) and link ioattn::ioattn.
include(CMakePackageConfigHelpers)

install(TARGETS ioattn EXPORT ioattnTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(DIRECTORY include/ioattn DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(EXPORT ioattnTargets NAMESPACE ioattn:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/ioattn)

configure_package_config_file(${CMAKE_CURRENT_LIST_DIR}/ioattnConfig.cmake.in
  ${CMAKE_CURRENT_BINARY_DIR}/ioattnConfig.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/ioattn)
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/ioattnConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/ioattnConfig.cmake ${CMAKE_CURRENT_BINARY_DIR}/ioattnConfigVersion.cmake
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/ioattn)
