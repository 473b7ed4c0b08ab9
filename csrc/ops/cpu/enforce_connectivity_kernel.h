// CPU building blocks of connectivity enforcement, shared by the enforce_connectivity and slic
// CPU kernels. The rule is in ops/enforce_connectivity.h.
#pragma once

#include <cstdint>

namespace spl {
namespace cpu {

// Labels one image: the 4-connected regions of equal labels (negative labels are outside every
// region and give -1), with regions smaller than min_size merged; writes labels 0..n-1 numbered
// in raster order of each region's first pixel and returns n.
template <typename label_t>
int64_t connect_regions(const label_t* labels, int64_t height, int64_t width, int64_t min_size, int64_t* out);

// The same, using the labels' own memory as scratch (they are overwritten), and spare[0, spare_size)
// (memory the caller no longer needs; may be null) before memory of its own.
int64_t connect_regions_in_place(int32_t* labels, int64_t height, int64_t width, int64_t min_size, int64_t* out,
                                 int32_t* spare, int64_t spare_size);

// Renumbers labels in [0, num_labels) (negative: -1) to 0..n-1 in raster order of each label's
// first pixel and returns n. No connectivity is enforced.
int64_t renumber_by_first_pixel(const int32_t* labels, int64_t num_labels, int64_t num_pixels, int64_t* out);

}  // namespace cpu
}  // namespace spl
