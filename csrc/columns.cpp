#include "columns.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <sstream>
#include <stdexcept>

#include "errors.h"
#include "page_advice.h"

namespace arrowloader {

namespace {

// "shard.arrow: column 'input_ids' row 17: <what>"
[[noreturn]] void fail_at(const ChunkOrigin& origin, const std::string& column,
                          int64_t local_row, const std::string& what) {
  std::ostringstream msg;
  msg << origin.file << ": column '" << column << "' row "
      << origin.first_row_in_file + local_row << ": " << what;
  throw CorpusFormatError(msg.str());
}

[[noreturn]] void fail_chunk(const ChunkOrigin& origin, const std::string& column,
                             const std::string& what) {
  std::ostringstream msg;
  msg << origin.file << ": column '" << column << "' (rows from "
      << origin.first_row_in_file << "): " << what;
  throw CorpusFormatError(msg.str());
}

bool bit_is_set(const uint8_t* bitmap, int64_t i) {
  return (bitmap[i >> 3] >> (i & 7)) & 1;
}

// Index of the first cleared bit in [begin, end), or -1.
int64_t first_cleared_bit(const uint8_t* bitmap, int64_t begin, int64_t end) {
  int64_t i = begin;
  while (i < end && (i & 7) != 0) {
    if (!bit_is_set(bitmap, i)) return i;
    ++i;
  }
  while (i + 8 <= end) {
    if (bitmap[i >> 3] != 0xFF) break;
    i += 8;
  }
  for (; i < end; ++i) {
    if (!bit_is_set(bitmap, i)) return i;
  }
  return -1;
}

int popcount64(uint64_t x) {
  // SWAR popcount (compilers turn it into one instruction where there is one).
  x = x - ((x >> 1) & 0x5555555555555555ULL);
  x = (x & 0x3333333333333333ULL) + ((x >> 2) & 0x3333333333333333ULL);
  x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0FULL;
  return static_cast<int>((x * 0x0101010101010101ULL) >> 56);
}

// Cleared bits (nulls) in [begin, end) of a validity bitmap; 0 without one.
int64_t count_cleared_bits(const void* bitmap_in, int64_t begin, int64_t end) {
  if (bitmap_in == nullptr) return 0;
  const auto* bitmap = static_cast<const uint8_t*>(bitmap_in);
  int64_t cleared = 0;
  int64_t i = begin;
  for (; i < end && (i & 7) != 0; ++i) cleared += !bit_is_set(bitmap, i);
  for (; i + 64 <= end; i += 64) {
    uint64_t word;
    std::memcpy(&word, bitmap + (i >> 3), sizeof(word));
    cleared += 64 - popcount64(word);
  }
  for (; i < end; ++i) cleared += !bit_is_set(bitmap, i);
  return cleared;
}

// An array's declared null count must be what its bitmap says (-1: not declared). A
// mismatch means the file contradicts itself about which values exist.
void check_null_count(const ChunkOrigin& origin, const std::string& column, const char* what,
                      int64_t declared, int64_t actual) {
  if (declared >= 0 && declared != actual) {
    fail_chunk(origin, column,
               std::string("the ") + what + " declare " + std::to_string(declared) +
                   " nulls but their validity bitmap marks " + std::to_string(actual) +
                   "; the file is corrupt. Regenerate it from its source.");
  }
}

bool parse_token_type(const char* format, bool narrow, TokenType* out) {
  if (format == nullptr || format[0] == '\0' || format[1] != '\0') return false;
  switch (format[0]) {
    case 'i': *out = TokenType::kInt32; return true;
    case 'l': *out = TokenType::kInt64; return true;
    case 'S': *out = TokenType::kUInt16; return true;
    case 'I': *out = TokenType::kUInt32; return true;
    case 'c': *out = TokenType::kInt8; return narrow;
    case 'C': *out = TokenType::kUInt8; return narrow;
    case 'b': *out = TokenType::kBool; return narrow;
    default: return false;
  }
}


int64_t bitmap_bytes(int64_t bits) { return (bits + 7) / 8; }

size_t scalar_size(char format) {
  switch (format) {
    case 'c': case 'C': return 1;
    case 's': case 'S': return 2;
    case 'i': case 'I': return 4;
    case 'l': case 'L': return 8;
    default: return 0;
  }
}

// Checks that offsets[0..rows] are >= 0, never decrease and end within
// num_values. One pass; the slow path only runs to name the failing row.
template <typename Offset>
void validate_offsets(const Offset* offsets, int64_t rows, int64_t num_values,
                      const ChunkOrigin& origin, const std::string& column) {
  if (offsets[0] < 0) {
    fail_at(origin, column, 0,
            "list offset is negative (" + std::to_string(offsets[0]) +
                "); the file is corrupt. Regenerate it from its source.");
  }
  bool decreasing = false;
  for (int64_t i = 0; i < rows; ++i) decreasing |= offsets[i + 1] < offsets[i];
  if (decreasing) {
    for (int64_t i = 0; i < rows; ++i) {
      if (offsets[i + 1] < offsets[i]) {
        fail_at(origin, column, i,
                "list offsets decrease (" + std::to_string(offsets[i]) + " -> " +
                    std::to_string(offsets[i + 1]) +
                    "); the file is corrupt. Regenerate it from its source.");
      }
    }
  }
  if (static_cast<int64_t>(offsets[rows]) > num_values) {
    int64_t row = 0;
    while (row < rows && static_cast<int64_t>(offsets[row + 1]) <= num_values) ++row;
    fail_at(origin, column, row,
            "list offsets point past the end of the values buffer (offset " +
                std::to_string(offsets[row + 1]) + " > " + std::to_string(num_values) +
                " values); the file is corrupt. Regenerate it from its source.");
  }
}

// The O(1) part of validate_offsets, for chunks whose offsets pass is skipped:
// the first offset is >= 0, the last within num_values and not below the
// first, so the chunk's token count and every later read of its ends are sane.
template <typename Offset>
void check_offset_ends(const Offset* offsets, int64_t rows, int64_t num_values,
                       const ChunkOrigin& origin, const std::string& column) {
  const int64_t first = offsets[0];
  const int64_t last = offsets[rows];
  if (first < 0 || last < first || last > num_values) {
    fail_chunk(origin, column,
               "list offsets run from " + std::to_string(first) + " to " +
                   std::to_string(last) + " over " + std::to_string(num_values) +
                   " values; the file is corrupt. Regenerate it from its source.");
  }
}

}  // namespace

ImportedArray::ImportedArray(ArrowSchema* schema, ArrowArray* array)
    : schema_(*schema), array_(*array) {
  // Moving per the C data interface: the producer's structs are marked
  // released, so their capsules do not release them a second time.
  schema->release = nullptr;
  array->release = nullptr;
}

ImportedArray::~ImportedArray() {
  if (array_.release != nullptr) array_.release(&array_);
  if (schema_.release != nullptr) schema_.release(&schema_);
}

const char* token_type_name(TokenType type) {
  switch (type) {
    case TokenType::kInt32: return "int32";
    case TokenType::kInt64: return "int64";
    case TokenType::kUInt16: return "uint16";
    case TokenType::kUInt32: return "uint32";
    case TokenType::kInt8: return "int8";
    case TokenType::kUInt8: return "uint8";
    case TokenType::kBool: return "bool";
  }
  return "?";
}

void TokenColumn::add_chunk(ArrowSchema* schema_in, ArrowArray* array_in,
                            ChunkOrigin origin, bool check_offsets) {
  if (schema_in == nullptr || array_in == nullptr || schema_in->release == nullptr ||
      array_in->release == nullptr) {
    throw std::invalid_argument("add_chunk: the Arrow array or schema was already released");
  }
  // The prefix sums cover the rows present when they were built; a later chunk
  // would fall outside them.
  if (frozen_ || has_token_offsets()) {
    throw std::logic_error("add_chunk: column '" + name_ + "' is frozen");
  }
  auto owner = std::make_unique<ImportedArray>(schema_in, array_in);
  const ArrowSchema& schema = owner->schema();
  const ArrowArray& array = owner->array();

  const std::string format = schema.format != nullptr ? schema.format : "";
  ListChunk chunk;
  if (format == "+l") {
    chunk.large_offsets = false;
  } else if (format == "+L") {
    chunk.large_offsets = true;
  } else {
    fail_chunk(origin, name_,
               "Arrow type format '" + format +
                   "' is not a list; expected list or large_list of "
                   "int32, int64, uint16 or uint32");
  }
  if (schema.n_children != 1 || array.n_children != 1 || array.n_buffers != 2 ||
      array.children[0]->n_buffers != 2) {
    fail_chunk(origin, name_, "malformed list array (unexpected buffer or child count)");
  }
  if (!parse_token_type(schema.children[0]->format, narrow_, &chunk.type)) {
    const char* child = schema.children[0]->format;
    fail_chunk(origin, name_,
               std::string("list values have Arrow type format '") +
                   (child != nullptr ? child : "") +
                   "'; expected int32, int64, uint16 or uint32");
  }
  if (array.length < 0 || array.offset < 0) {
    fail_chunk(origin, name_, "negative array length or offset");
  }
  const ArrowArray& child = *array.children[0];
  if (child.length < 0 || child.offset < 0) {
    fail_chunk(origin, name_, "negative values length or offset");
  }

  chunk.rows = array.length;
  chunk.num_values = child.length;

  const int64_t null_rows =
      count_cleared_bits(array.buffers[0], array.offset, array.offset + array.length);
  if (null_rows > 0) {
    const auto* validity = static_cast<const uint8_t*>(array.buffers[0]);
    int64_t bit = first_cleared_bit(validity, array.offset, array.offset + array.length);
    fail_at(origin, name_, bit - array.offset,
            narrow_ ? "null where a list was expected; a per-token column must not "
                      "contain nulls (fill those rows when writing the corpus)"
                    : "null where a list of tokens was expected; the token column must not "
                      "contain nulls (drop or fill those rows when writing the corpus)");
  }
  check_null_count(origin, name_, "rows", array.null_count, null_rows);

  if (array.length > 0) {
    if (array.buffers[1] == nullptr) fail_chunk(origin, name_, "missing list offsets buffer");
    const size_t osize = chunk.large_offsets ? 8 : 4;
    chunk.offsets = static_cast<const char*>(array.buffers[1]) + array.offset * osize;
    if (!check_offsets) {
      if (chunk.large_offsets) {
        check_offset_ends(static_cast<const int64_t*>(chunk.offsets), chunk.rows,
                          chunk.num_values, origin, name_);
      } else {
        check_offset_ends(static_cast<const int32_t*>(chunk.offsets), chunk.rows,
                          chunk.num_values, origin, name_);
      }
    } else if (chunk.large_offsets) {
      validate_offsets(static_cast<const int64_t*>(chunk.offsets), chunk.rows,
                       chunk.num_values, origin, name_);
    } else {
      validate_offsets(static_cast<const int32_t*>(chunk.offsets), chunk.rows,
                       chunk.num_values, origin, name_);
    }
  }

  const int64_t first = array.length > 0 ? chunk.offset_at(0) : 0;
  const int64_t last = array.length > 0 ? chunk.offset_at(chunk.rows) : 0;
  if (last > first) {
    if (child.buffers[1] == nullptr) fail_chunk(origin, name_, "missing list values buffer");
    if (child.buffers[0] != nullptr) {
      const auto* validity = static_cast<const uint8_t*>(child.buffers[0]);
      int64_t bit = first_cleared_bit(validity, child.offset + first, child.offset + last);
      if (bit >= 0) {
        const int64_t position = bit - child.offset;
        int64_t row = 0;
        while (row + 1 < chunk.rows && chunk.offset_at(row + 1) <= position) ++row;
        fail_at(origin, name_, row,
                "null token at position " + std::to_string(position - chunk.offset_at(row)) +
                    " of the list; token ids must not be null");
      }
    }
  }
  check_null_count(origin, name_, "list values",
                   child.null_count,
                   count_cleared_bits(child.buffers[0], child.offset, child.offset + child.length));
  if (child.buffers[1] != nullptr) {
    if (chunk.type == TokenType::kBool) {
      chunk.values = child.buffers[1];
      chunk.value_bit_offset = child.offset;
    } else {
      chunk.values =
          static_cast<const char*>(child.buffers[1]) + child.offset * token_size(chunk.type);
    }
  }

  // The bytes the column will ever read of this chunk. If a held region covers
  // them all, it keeps them alive and the chunk's own array is released here.
  const size_t osize = chunk.large_offsets ? 8 : 4;
  const size_t vsize = token_size(chunk.type);
  const bool covered =
      (array.buffers[0] == nullptr ||
       in_region(array.buffers[0], bitmap_bytes(array.offset + array.length))) &&
      (array.length == 0 ||
       in_region(chunk.offsets, (chunk.rows + 1) * static_cast<int64_t>(osize))) &&
      (child.buffers[0] == nullptr ||
       in_region(child.buffers[0], bitmap_bytes(child.offset + child.length))) &&
      (child.length == 0 ||
       in_region(chunk.values, chunk.type == TokenType::kBool
                                   ? bitmap_bytes(child.offset + chunk.num_values)
                                   : chunk.num_values * static_cast<int64_t>(vsize)));

  num_tokens_ += last - first;
  if (check_offsets) ++checked_chunks_;
  starts_.push_back(starts_.back() + chunk.rows);
  chunks_.push_back(chunk);
  origins_.push_back(std::move(origin));
  if (!covered) owners_.push_back(std::move(owner));
}

void TokenColumn::hold_region(ArrowSchema* schema_in, ArrowArray* array_in) {
  if (schema_in == nullptr || array_in == nullptr || schema_in->release == nullptr ||
      array_in->release == nullptr) {
    throw std::invalid_argument("hold_region: the Arrow array or schema was already released");
  }
  if (frozen_ || has_token_offsets()) {
    throw std::logic_error("hold_region: column '" + name_ + "' is frozen");
  }
  auto owner = std::make_unique<ImportedArray>(schema_in, array_in);
  const ArrowSchema& schema = owner->schema();
  const ArrowArray& array = owner->array();
  if (schema.format == nullptr || std::strcmp(schema.format, "C") != 0 ||
      array.n_buffers != 2 || array.length < 0 || array.offset < 0) {
    throw std::invalid_argument("hold_region: expected a uint8 array over the region");
  }
  const auto begin = reinterpret_cast<uintptr_t>(array.buffers[1]);
  region_begin_ = begin == 0 ? 0 : begin + static_cast<uintptr_t>(array.offset);
  region_end_ = begin == 0 ? 0 : region_begin_ + static_cast<uintptr_t>(array.length);
  if (region_begin_ != 0) regions_.emplace_back(region_begin_, region_end_);
  owners_.push_back(std::move(owner));
}

int64_t TokenColumn::advise_random_access() const {
  int64_t advised = 0;
  for (const auto& [begin, end] : regions_) {
    advised += advise_pages(reinterpret_cast<const void*>(begin), end - begin,
                            PageAdvice::kRandom);
  }
  return advised;
}

bool TokenColumn::in_region(const void* data, int64_t bytes) const {
  const auto at = reinterpret_cast<uintptr_t>(data);
  return at != 0 && region_begin_ != 0 && at >= region_begin_ && at <= region_end_ &&
         bytes >= 0 && static_cast<uint64_t>(bytes) <= region_end_ - at;
}

void TokenColumn::check_offsets_of(size_t c) const {
  const ListChunk& chunk = chunks_[c];
  if (chunk.rows == 0) return;
  if (chunk.large_offsets) {
    validate_offsets(static_cast<const int64_t*>(chunk.offsets), chunk.rows, chunk.num_values,
                     origins_[c], name_);
  } else {
    validate_offsets(static_cast<const int32_t*>(chunk.offsets), chunk.rows, chunk.num_values,
                     origins_[c], name_);
  }
}

void TokenColumn::check_chunk_offsets(size_t begin, size_t end) {
  if (begin > end || end > chunks_.size()) {
    throw std::out_of_range("check_chunk_offsets: chunks [" + std::to_string(begin) + ", " +
                            std::to_string(end) + ") of " + std::to_string(chunks_.size()));
  }
  for (size_t c = begin; c < end; ++c) {
    check_offsets_of(c);
    ++checked_chunks_;
  }
}

const std::vector<int64_t>& TokenColumn::token_offsets() const {
  std::call_once(token_offsets_once_, [this] {
    std::vector<int64_t> sums(static_cast<size_t>(num_rows()) + 1);
    // Files may be cold and advised for random reads (page_advice.h): ask for every
    // chunk's offsets at once rather than fault them in a page at a time.
    PageRanges ranges;
    for (const ListChunk& chunk : chunks_) {
      if (chunk.rows > 0) {
        ranges.add(chunk.offsets,
                   static_cast<size_t>(chunk.rows + 1) * (chunk.large_offsets ? 8 : 4));
      }
    }
    ranges.advise(PageAdvice::kWillNeed);
    int64_t before = 0;  // tokens in the chunks already summed
    for (size_t c = 0; c < chunks_.size(); ++c) {
      const ListChunk& chunk = chunks_[c];
      if (chunk.rows == 0) continue;
      int64_t* out = sums.data() + starts_[c];
      // Shifting the chunk's own offsets by one constant keeps the loop free of
      // a carried dependency, so it vectorises.
      if (chunk.large_offsets) {
        const auto* o = static_cast<const int64_t*>(chunk.offsets);
        const int64_t shift = before - o[0];
        for (int64_t r = 0; r <= chunk.rows; ++r) out[r] = o[r] + shift;
      } else {
        const auto* o = static_cast<const int32_t*>(chunk.offsets);
        const int64_t shift = before - o[0];
        for (int64_t r = 0; r <= chunk.rows; ++r) out[r] = o[r] + shift;
      }
      before = out[chunk.rows];
    }
    token_offsets_ = std::move(sums);
    token_offsets_ready_.store(true, std::memory_order_release);
  });
  return token_offsets_;
}

size_t TokenColumn::chunk_of(int64_t global) const {
  // starts_ is sorted; the chunk is the last one starting at or before global.
  auto it = std::upper_bound(starts_.begin(), starts_.end(), global);
  return static_cast<size_t>(it - starts_.begin()) - 1;
}

void TokenColumn::check_index(int64_t global) const {
  if (global < 0 || global >= num_rows()) {
    throw std::out_of_range("index " + std::to_string(global) +
                            " is out of range for a corpus of " +
                            std::to_string(num_rows()) + " rows");
  }
}

size_t TokenColumn::span_of(int64_t global, int64_t* begin, int64_t* end) const {
  const size_t c = chunk_of(global);
  const ListChunk& chunk = chunks_[c];
  const int64_t local = global - starts_[c];
  *begin = chunk.offset_at(local);
  *end = chunk.offset_at(local + 1);
  if (*begin < 0 || *end < *begin || *end > chunk.num_values) {
    fail_at(origins_[c], name_, local,
            "list offsets " + std::to_string(*begin) + " -> " + std::to_string(*end) +
                " do not lie within the " + std::to_string(chunk.num_values) +
                " values; the file is corrupt (or changed since its index cache entry "
                "was written). Regenerate it from its source.");
  }
  return c;
}

TokenRow TokenColumn::row(int64_t global) const {
  int64_t begin = 0;
  int64_t end = 0;
  const ListChunk& chunk = chunks_[span_of(global, &begin, &end)];
  const char* base = static_cast<const char*>(chunk.values);
  if (chunk.type == TokenType::kBool) {
    return TokenRow{base, end - begin, chunk.type, chunk.value_bit_offset + begin};
  }
  return TokenRow{base == nullptr ? nullptr : base + begin * token_size(chunk.type),
                  end - begin, chunk.type};
}

int64_t TokenColumn::row_length(int64_t global) const {
  int64_t begin = 0;
  int64_t end = 0;
  span_of(global, &begin, &end);
  return end - begin;
}

void TokenColumn::set_vocab_size(int64_t vocab_size) {
  if (frozen_ || has_token_offsets()) {
    throw std::logic_error("set_vocab_size: column '" + name_ + "' is frozen");
  }
  if (vocab_size < 0) {
    throw std::invalid_argument("vocab_size must be >= 0 (0: unchecked), got " +
                                std::to_string(vocab_size));
  }
  vocab_size_ = vocab_size;
}

std::string TokenColumn::describe_row(int64_t global) const {
  return describe_row(global, name_);
}

std::string TokenColumn::describe_row(int64_t global, const std::string& column) const {
  const size_t c = chunk_of(global);
  std::ostringstream msg;
  msg << origins_[c].file << ": column '" << column << "' row "
      << origins_[c].first_row_in_file + (global - starts_[c]);
  return msg.str();
}

std::pair<int64_t, int64_t> TokenColumn::truncation_loss(int64_t max_length) const {
  int64_t tokens = 0;
  int64_t rows = 0;
  for (const ListChunk& chunk : chunks_) {
    for (int64_t r = 0; r < chunk.rows; ++r) {
      const int64_t n = chunk.offset_at(r + 1) - chunk.offset_at(r);
      if (n > max_length) {
        tokens += n - max_length;
        ++rows;
      }
    }
  }
  return {tokens, rows};
}

void ScalarColumn::add_chunk(ArrowSchema* schema_in, ArrowArray* array_in,
                             ChunkOrigin origin) {
  if (schema_in == nullptr || array_in == nullptr || schema_in->release == nullptr ||
      array_in->release == nullptr) {
    throw std::invalid_argument("add_chunk: the Arrow array or schema was already released");
  }
  if (frozen_) throw std::logic_error("add_chunk: column '" + name_ + "' is frozen");
  auto owner = std::make_unique<ImportedArray>(schema_in, array_in);
  const ArrowSchema& schema = owner->schema();
  const ArrowArray& array = owner->array();
  const char* format = schema.format != nullptr ? schema.format : "";
  if (format[0] == '\0' || format[1] != '\0' || scalar_size(format[0]) == 0) {
    fail_chunk(origin, name_,
               std::string("Arrow type format '") + format +
                   "' is not an integer type; expected int8 .. int64 or uint8 .. uint64");
  }
  if (array.n_buffers != 2 || array.length < 0 || array.offset < 0) {
    fail_chunk(origin, name_, "malformed integer array");
  }
  const int64_t null_labels =
      count_cleared_bits(array.buffers[0], array.offset, array.offset + array.length);
  if (null_labels > 0) {
    const auto* validity = static_cast<const uint8_t*>(array.buffers[0]);
    int64_t bit = first_cleared_bit(validity, array.offset, array.offset + array.length);
    fail_at(origin, name_, bit - array.offset,
            "null label; the label column must not contain nulls");
  }
  check_null_count(origin, name_, "labels", array.null_count, null_labels);
  Chunk chunk;
  chunk.format = format[0];
  chunk.rows = array.length;
  if (array.length > 0) {
    if (array.buffers[1] == nullptr) fail_chunk(origin, name_, "missing values buffer");
    chunk.values =
        static_cast<const char*>(array.buffers[1]) + array.offset * scalar_size(chunk.format);
    if (chunk.format == 'L') {
      const auto* v = static_cast<const uint64_t*>(chunk.values);
      for (int64_t r = 0; r < chunk.rows; ++r) {
        if (v[r] > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
          fail_at(origin, name_, r,
                  "label " + std::to_string(v[r]) + " does not fit in int64");
        }
      }
    }
  }
  starts_.push_back(starts_.back() + chunk.rows);
  chunks_.push_back(chunk);
  owners_.push_back(std::move(owner));
}

int64_t ScalarColumn::value(int64_t global) const {
  auto it = std::upper_bound(starts_.begin(), starts_.end(), global);
  const size_t c = static_cast<size_t>(it - starts_.begin()) - 1;
  const Chunk& chunk = chunks_[c];
  const int64_t r = global - starts_[c];
  switch (chunk.format) {
    case 'c': return static_cast<const int8_t*>(chunk.values)[r];
    case 'C': return static_cast<const uint8_t*>(chunk.values)[r];
    case 's': return static_cast<const int16_t*>(chunk.values)[r];
    case 'S': return static_cast<const uint16_t*>(chunk.values)[r];
    case 'i': return static_cast<const int32_t*>(chunk.values)[r];
    case 'I': return static_cast<const uint32_t*>(chunk.values)[r];
    case 'l': return static_cast<const int64_t*>(chunk.values)[r];
    case 'L': return static_cast<int64_t>(static_cast<const uint64_t*>(chunk.values)[r]);
    default: return 0;
  }
}

}  // namespace arrowloader
