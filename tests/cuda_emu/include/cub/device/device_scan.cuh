// CUDA emulator stand-in for cub/device/device_scan.cuh.
#pragma once
#include "cub_emulated.h"
