// Advice to the kernel about how mapped corpus pages will be read.
//
// Packed epochs read blocks in random order. On a corpus larger than memory each
// missing page is a disk read, and by default the kernel reads around every fault
// (read_ahead_kb, 8 MiB on some virtual disks) as if the file were read in order:
// megabytes read per 8 KiB block. MADV_RANDOM on the file's mapping turns that off;
// MADV_WILLNEED on the exact ranges of the next batches starts their reads early and
// many at once, instead of one synchronous fault at a time on each native thread.
// Advice never changes what is read, only when: errors are ignored.
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace arrowloader {

enum class PageAdvice { kRandom, kWillNeed };

// Applies `advice` to the pages covering [begin, begin + bytes). Returns whether the
// kernel took it.
bool advise_pages(const void* begin, size_t bytes, PageAdvice advice);

// Collects byte ranges, then advises the pages covering them, ranges that share or
// touch a page merged into one call.
class PageRanges {
 public:
  void add(const void* begin, size_t bytes);
  // Advises every range collected and clears them; returns the bytes advised.
  int64_t advise(PageAdvice advice);

 private:
  std::vector<std::pair<uintptr_t, uintptr_t>> ranges_;  // [page begin, page end)
};

}  // namespace arrowloader
