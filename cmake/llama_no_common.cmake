# Included by CMake right after llama.cpp's own project() call, through
# -DCMAKE_PROJECT_llama.cpp_INCLUDE (the Makefile passes it when pip builds llama-cpp-python).
#
# llama-cpp-python forces LLAMA_BUILD_COMMON on before it adds the llama.cpp it vendors, so
# llama.cpp's `common` library (argument parsing, chat templates and parsers, JSON; 51 files, half
# of the whole compile on 2 cores) is built and installed beside the wheel's libraries, where
# nothing loads it: llama-cpp-python's ctypes bindings open libllama and libggml only, and its
# multimodal library, the one part that links `common`, is off (LLAVA_BUILD=OFF). Setting the
# option here, before llama.cpp's option() reads it, skips the library; llama-cpp-python does the
# same itself for Emscripten builds. Should a future llama.cpp rename its project or the option,
# this file is simply not read, and the build is the usual one.
set(LLAMA_BUILD_COMMON OFF CACHE BOOL "llama: build common utils library" FORCE)
