# POSH_MAN: build and install the man pages with scdoc. ON by default when scdoc is found; asked for
# explicitly (-DPOSH_MAN=ON) without scdoc, the configuration fails and says so.
find_program(SCDOC_EXECUTABLE scdoc)
if(SCDOC_EXECUTABLE)
  set(posh_man_default ON)
else()
  set(posh_man_default OFF)
endif()
option(POSH_MAN "Build and install the man pages (needs scdoc)" ${posh_man_default})
if(POSH_MAN AND NOT SCDOC_EXECUTABLE)
  message(FATAL_ERROR "POSH_MAN is ON but scdoc was not found: install it (Debian: apt-get install scdoc), "
                      "point SCDOC_EXECUTABLE at it, or configure with -DPOSH_MAN=OFF")
endif()
