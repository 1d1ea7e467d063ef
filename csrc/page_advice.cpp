#include "page_advice.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>

namespace arrowloader {
namespace {

uintptr_t page_size() {
  static const uintptr_t size = [] {
    const long value = sysconf(_SC_PAGESIZE);
    return value > 0 ? static_cast<uintptr_t>(value) : uintptr_t{4096};
  }();
  return size;
}

int native_advice(PageAdvice advice) {
  return advice == PageAdvice::kRandom ? MADV_RANDOM : MADV_WILLNEED;
}

}  // namespace

bool advise_pages(const void* begin, size_t bytes, PageAdvice advice) {
  if (begin == nullptr || bytes == 0) return false;
  const uintptr_t page = page_size();
  const auto at = reinterpret_cast<uintptr_t>(begin);
  const uintptr_t first = at & ~(page - 1);
  const uintptr_t end = (at + bytes + page - 1) & ~(page - 1);
  return madvise(reinterpret_cast<void*>(first), end - first, native_advice(advice)) == 0;
}

void PageRanges::add(const void* begin, size_t bytes) {
  if (begin == nullptr || bytes == 0) return;
  const uintptr_t page = page_size();
  const auto at = reinterpret_cast<uintptr_t>(begin);
  ranges_.emplace_back(at & ~(page - 1), (at + bytes + page - 1) & ~(page - 1));
}

int64_t PageRanges::advise(PageAdvice advice) {
  std::sort(ranges_.begin(), ranges_.end());
  int64_t advised = 0;
  size_t i = 0;
  while (i < ranges_.size()) {
    uintptr_t first = ranges_[i].first;
    uintptr_t end = ranges_[i].second;
    for (++i; i < ranges_.size() && ranges_[i].first <= end; ++i) {
      end = std::max(end, ranges_[i].second);
    }
    if (madvise(reinterpret_cast<void*>(first), end - first, native_advice(advice)) == 0) {
      advised += static_cast<int64_t>(end - first);
    }
  }
  ranges_.clear();
  return advised;
}

}  // namespace arrowloader
