# Makes the hostile test initramfs: the normal guest image (BASE) with a
# second newc archive appended whose only file is /init = AGENT. The kernel
# unpacks concatenated archives in order, so this /init replaces the agent.
#
#   cmake -DAGENT=bin/vmf-hostile-agent -DBASE=guest/initramfs.cpio \
#         -DSTAGE=hostile-stage -DOUT=guest/hostile-initramfs.cpio -P make_initrd.cmake
foreach(var AGENT BASE STAGE OUT)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "make_initrd.cmake: -D${var}=... is required")
  endif()
endforeach()
if(NOT EXISTS "${BASE}")
  message(FATAL_ERROR "make_initrd.cmake: the guest image ${BASE} does not exist")
endif()

file(REMOVE_RECURSE "${STAGE}")
file(MAKE_DIRECTORY "${STAGE}/root")

# Debug info only makes the image (and every boot) bigger.
find_program(STRIP_TOOL strip)
set(stripped FALSE)
if(STRIP_TOOL)
  execute_process(COMMAND "${STRIP_TOOL}" --strip-debug -o "${STAGE}/root/init" "${AGENT}"
                  RESULT_VARIABLE rc)
  if(rc EQUAL 0)
    set(stripped TRUE)
  endif()
endif()
if(NOT stripped)
  file(COPY_FILE "${AGENT}" "${STAGE}/root/init")
endif()
file(CHMOD "${STAGE}/root/init" PERMISSIONS OWNER_READ OWNER_WRITE OWNER_EXECUTE GROUP_READ
     GROUP_EXECUTE WORLD_READ WORLD_EXECUTE)

file(WRITE "${STAGE}/list" "init\n")
execute_process(COMMAND cpio -o -H newc --quiet -R 0:0
                WORKING_DIRECTORY "${STAGE}/root"
                INPUT_FILE "${STAGE}/list"
                OUTPUT_FILE "${STAGE}/hostile.cpio"
                RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "make_initrd.cmake: cpio failed (${rc})")
endif()

execute_process(COMMAND "${CMAKE_COMMAND}" -E cat "${BASE}" "${STAGE}/hostile.cpio"
                OUTPUT_FILE "${OUT}.tmp"
                RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "make_initrd.cmake: concatenating ${BASE} and the hostile archive failed (${rc})")
endif()
file(RENAME "${OUT}.tmp" "${OUT}")
