# Torch for the Python module (CMakeLists.txt, TACQ_TORCH=ON).
#
# A CUDA build of torch (the Linux wheels on PyPI) has its CMake package look
# for CUDA again, with the legacy FindCUDA module, which fails without a CUDA
# toolkit and misses one whose nvcc it reaches through a wrapper (as
# /usr/local/bin/nvcc may be). So:
# - with the CUDA kernels: find_package(Torch), pointed at the toolkit that
#   FindCUDAToolkit found;
# - CPU kernels only, against a CUDA torch: torch's headers and shared
#   libraries straight from the installed package (the imported target
#   tacq_torch_cpu), which is all the CPU glue needs.
# Either way sets TORCH_LIBRARIES (what _C links), TORCH_INSTALL_PREFIX and
# Torch_VERSION.
macro(tacq_find_torch torch_cmake_prefix torch_cuda with_cuda)
  if(${with_cuda} OR "${torch_cuda}" STREQUAL "")
    if(${with_cuda} AND NOT DEFINED CUDA_TOOLKIT_ROOT_DIR)
      get_filename_component(CUDA_TOOLKIT_ROOT_DIR "${CUDAToolkit_BIN_DIR}" DIRECTORY)
    endif()
    list(APPEND CMAKE_PREFIX_PATH "${torch_cmake_prefix}")
    find_package(Torch REQUIRED)
  else()
    execute_process(
      COMMAND "${Python_EXECUTABLE}" -c
              "import os, torch; print(os.path.dirname(torch.__file__)); print(torch.__version__.split('+')[0]); print(int(torch._C._GLIBCXX_USE_CXX11_ABI))"
      OUTPUT_VARIABLE _tacq_torch OUTPUT_STRIP_TRAILING_WHITESPACE COMMAND_ERROR_IS_FATAL ANY)
    string(REPLACE "\n" ";" _tacq_torch "${_tacq_torch}")
    list(GET _tacq_torch 0 TORCH_INSTALL_PREFIX)
    list(GET _tacq_torch 1 Torch_VERSION)
    list(GET _tacq_torch 2 _tacq_torch_abi)
    add_library(tacq_torch_cpu INTERFACE)
    target_include_directories(tacq_torch_cpu SYSTEM INTERFACE
      "${TORCH_INSTALL_PREFIX}/include" "${TORCH_INSTALL_PREFIX}/include/torch/csrc/api/include")
    target_compile_definitions(tacq_torch_cpu INTERFACE _GLIBCXX_USE_CXX11_ABI=${_tacq_torch_abi})
    foreach(_lib torch torch_cpu c10)
      find_library(_tacq_lib_${_lib} ${_lib} PATHS "${TORCH_INSTALL_PREFIX}/lib" NO_DEFAULT_PATH REQUIRED)
      target_link_libraries(tacq_torch_cpu INTERFACE "${_tacq_lib_${_lib}}")
    endforeach()
    set(TORCH_LIBRARIES tacq_torch_cpu)
    message(STATUS "tacq_ext: torch ${Torch_VERSION} built with CUDA ${torch_cuda}, CPU kernels only: "
                   "torch's headers and libraries from ${TORCH_INSTALL_PREFIX}")
  endif()
endmacro()
