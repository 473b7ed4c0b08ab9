// CUDA emulator stand-in for cub/device/device_run_length_encode.cuh.
#pragma once
#include "cub_emulated.h"
