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
# Torch_VERSION. torch_dir, torch_version, torch_abi, torch_cuda: what the
# interpreter's torch reports (CMakeLists.txt asks it once).
macro(tacq_find_torch torch_dir torch_version torch_abi torch_cuda with_cuda)
  if(${with_cuda} OR "${torch_cuda}" STREQUAL "")
    if(${with_cuda} AND NOT DEFINED CUDA_TOOLKIT_ROOT_DIR)
      get_filename_component(CUDA_TOOLKIT_ROOT_DIR "${CUDAToolkit_BIN_DIR}" DIRECTORY)
    endif()
    list(APPEND CMAKE_PREFIX_PATH "${torch_dir}/share/cmake")
    find_package(Torch REQUIRED)
  else()
    set(TORCH_INSTALL_PREFIX "${torch_dir}")
    set(Torch_VERSION "${torch_version}")
    add_library(tacq_torch_cpu INTERFACE)
    target_include_directories(tacq_torch_cpu SYSTEM INTERFACE
      "${TORCH_INSTALL_PREFIX}/include" "${TORCH_INSTALL_PREFIX}/include/torch/csrc/api/include")
    target_compile_definitions(tacq_torch_cpu INTERFACE _GLIBCXX_USE_CXX11_ABI=${torch_abi})
    foreach(_lib torch torch_cpu c10)
      find_library(_tacq_lib_${_lib} ${_lib} PATHS "${TORCH_INSTALL_PREFIX}/lib" NO_DEFAULT_PATH REQUIRED)
      target_link_libraries(tacq_torch_cpu INTERFACE "${_tacq_lib_${_lib}}")
    endforeach()
    set(TORCH_LIBRARIES tacq_torch_cpu)
    message(STATUS "tacq_ext: torch ${Torch_VERSION} built with CUDA ${torch_cuda}, CPU kernels only: "
                   "torch's headers and libraries from ${TORCH_INSTALL_PREFIX}")
  endif()
endmacro()
