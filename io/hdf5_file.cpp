#include "io/hdf5_file.h"

#include <hdf5.h>

#include <type_traits>

#include "core/error.h"

namespace qshard {

static_assert(std::is_same_v<hid_t, int64_t>, "H5Handle stores hid_t as int64_t");
static_assert(std::is_same_v<herr_t, int>, "H5Handle closes with int(*)(int64_t)");

namespace {

// Turns HDF5's automatic error printing off for the lifetime of the object, so that a
// failing call reports once, through our exception, instead of a stack dump on stderr.
class QuietErrors {
 public:
  QuietErrors() {
    H5Eget_auto2(H5E_DEFAULT, &func_, &data_);
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  }
  ~QuietErrors() { H5Eset_auto2(H5E_DEFAULT, func_, data_); }
  QuietErrors(const QuietErrors&) = delete;
  QuietErrors& operator=(const QuietErrors&) = delete;

 private:
  H5E_auto2_t func_ = nullptr;
  void* data_ = nullptr;
};

herr_t walk_error(unsigned n, const H5E_error2_t* e, void* out) {
  auto* msg = static_cast<std::string*>(out);
  if (n >= 4) return 0;  // the innermost few frames say what went wrong
  char minor[256] = {0};
  H5Eget_msg(e->min_num, nullptr, minor, sizeof minor);
  if (!msg->empty()) msg->append("; ");
  msg->append(e->func_name ? e->func_name : "?").append(": ");
  msg->append(e->desc && *e->desc ? e->desc : minor);
  if (e->desc && *e->desc && minor[0]) msg->append(" (").append(minor).append(")");
  return 0;
}

std::string error_stack() {
  std::string msg;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, walk_error, &msg);
  H5Eclear2(H5E_DEFAULT);
  return msg.empty() ? std::string("no HDF5 error stack") : msg;
}

[[noreturn]] void h5_fail(const char* stmt, const char* file, int line, const std::string& what) {
  fail("HDF5 call ", stmt, " failed at ", file, ":", line, " on ", what, ": ", error_stack());
}

}  // namespace

// Evaluates an HDF5 call with printing silenced; a negative result throws.
#define QS_H5(expr, what)                                                  \
  ([&] {                                                                   \
    QuietErrors quiet_;                                                    \
    const auto r_ = (expr);                                                \
    if (r_ < 0) h5_fail(#expr, __FILE__, __LINE__, (what));                \
    return r_;                                                             \
  }())

size_t h5_type_size(H5Type t) {
  switch (t) {
    case H5Type::U8: return 1;
    case H5Type::U16: return 2;
    case H5Type::I32: return 4;
    case H5Type::I64: return 8;
    case H5Type::F32: return 4;
    case H5Type::F64: return 8;
  }
  return 0;
}

const char* h5_type_name(H5Type t) {
  switch (t) {
    case H5Type::U8: return "u8";
    case H5Type::U16: return "u16";
    case H5Type::I32: return "i32";
    case H5Type::I64: return "i64";
    case H5Type::F32: return "f32";
    case H5Type::F64: return "f64";
  }
  return "?";
}

namespace {

hid_t file_type(H5Type t) {
  switch (t) {
    case H5Type::U8: return H5T_STD_U8LE;
    case H5Type::U16: return H5T_STD_U16LE;
    case H5Type::I32: return H5T_STD_I32LE;
    case H5Type::I64: return H5T_STD_I64LE;
    case H5Type::F32: return H5T_IEEE_F32LE;
    case H5Type::F64: return H5T_IEEE_F64LE;
  }
  return -1;
}

hid_t mem_type(H5Type t) {
  switch (t) {
    case H5Type::U8: return H5T_NATIVE_UINT8;
    case H5Type::U16: return H5T_NATIVE_UINT16;
    case H5Type::I32: return H5T_NATIVE_INT32;
    case H5Type::I64: return H5T_NATIVE_INT64;
    case H5Type::F32: return H5T_NATIVE_FLOAT;
    case H5Type::F64: return H5T_NATIVE_DOUBLE;
  }
  return -1;
}

void check_name(const std::string& name, const std::string& where) {
  if (name.empty() || name == "." || name.find('/') != std::string::npos)
    fail("HDF5 object name '", name, "' in ", where, " must be one non-empty path component");
}

}  // namespace

// ------------------------------------------------------------------------ H5Handle

H5Handle::H5Handle(int64_t id, int (*close)(int64_t)) : h_(std::make_shared<Id>(id, close)) {}

H5Handle::Id::~Id() {
  if (id >= 0 && close) {
    QuietErrors quiet;
    if (close(id) < 0) H5Eclear2(H5E_DEFAULT);
  }
}

void H5Handle::close_checked(const std::string& what) {
  if (!h_) return;
  QS_ASSERT(h_.use_count() == 1, "closing ", what, " while other handles share it");
  const int64_t id = h_->id;
  auto close = h_->close;
  h_->id = -1;  // the destructor must not close it again, whatever happens below
  h_.reset();
  QS_H5(close(id), what);
}

// ------------------------------------------------------------------------- H5Group

std::string H5Group::child_path(const std::string& name) const {
  return path_ == "/" ? "/" + name : path_ + "/" + name;
}

// Creation properties without object timestamps: the same contents give the same bytes
// (a resumed run must write what an uninterrupted one writes).
H5Handle untimed_create_plist(hid_t cls) {
  H5Handle p(QS_H5(H5Pcreate(cls), "HDF5 property list"), H5Pclose);
  QS_H5(H5Pset_obj_track_times(p.id(), false), "HDF5 property list");
  return p;
}

std::string H5Group::where(const std::string& object) const {
  return file_ + ":" + (object == "." ? path_ : child_path(object));
}

H5Group H5Group::create_group(const std::string& name) {
  check_name(name, where("."));
  const H5Handle gcpl = untimed_create_plist(H5P_GROUP_CREATE);
  const hid_t g = QS_H5(H5Gcreate2(h_.id(), name.c_str(), H5P_DEFAULT, gcpl.id(), H5P_DEFAULT),
                        where(name));
  return H5Group(H5Handle(g, H5Gclose), file_, child_path(name), par_);
}

H5Group H5Group::open_group(const std::string& name) const {
  check_name(name, where("."));
  const hid_t g = QS_H5(H5Gopen2(h_.id(), name.c_str(), H5P_DEFAULT), where(name));
  return H5Group(H5Handle(g, H5Gclose), file_, child_path(name), par_);
}

bool H5Group::has(const std::string& name) const {
  check_name(name, where("."));
  return QS_H5(H5Lexists(h_.id(), name.c_str(), H5P_DEFAULT), where(name)) > 0;
}

bool H5Group::is_group(const std::string& name) const {
  if (!has(name)) return false;
  H5Handle obj(QS_H5(H5Oopen(h_.id(), name.c_str(), H5P_DEFAULT), where(name)), H5Oclose);
  return H5Iget_type(obj.id()) == H5I_GROUP;
}

std::vector<std::string> H5Group::children() const {
  std::vector<std::string> names;
  auto collect = [](hid_t, const char* name, const H5L_info_t*, void* out) -> herr_t {
    static_cast<std::vector<std::string>*>(out)->emplace_back(name);
    return 0;
  };
  hsize_t idx = 0;
  QS_H5(H5Literate(h_.id(), H5_INDEX_NAME, H5_ITER_INC, &idx, collect, &names), where("."));
  return names;
}

void H5Group::write_dataset(const std::string& name, H5Type type, const Shape& shape,
                            const void* data) {
  check_name(name, where("."));
  std::vector<hsize_t> dims(shape.begin(), shape.end());
  for (int64_t d : shape) QS_ASSERT(d >= 0, "negative dimension for ", where(name));
  H5Handle space(QS_H5(shape.empty() ? H5Screate(H5S_SCALAR)
                                     : H5Screate_simple(int(dims.size()), dims.data(), nullptr),
                       where(name)),
                 H5Sclose);
  const H5Handle dcpl = untimed_create_plist(H5P_DATASET_CREATE);
  H5Handle dset(QS_H5(H5Dcreate2(h_.id(), name.c_str(), file_type(type), space.id(), H5P_DEFAULT,
                                 dcpl.id(), H5P_DEFAULT),
                      where(name)),
                H5Dclose);
  if (shape_numel(shape) > 0 && par_) {
    // Collective transfer: the rank with the data writes all of it, the others select
    // nothing (HDF5 wants a buffer pointer even then).
    H5Handle fspace(QS_H5(H5Dget_space(dset.id()), where(name)), H5Sclose);
    H5Handle mspace(QS_H5(H5Scopy(fspace.id()), where(name)), H5Sclose);
    static const uint64_t dummy = 0;
    if (!data) {
      QS_H5(H5Sselect_none(fspace.id()), where(name));
      QS_H5(H5Sselect_none(mspace.id()), where(name));
    }
    QS_H5(H5Dwrite(dset.id(), mem_type(type), mspace.id(), fspace.id(), par_->dxpl.id(),
                   data ? data : &dummy),
          where(name));
  } else if (shape_numel(shape) > 0) {
    QS_ASSERT(data != nullptr, "no data for ", where(name));
    QS_H5(H5Dwrite(dset.id(), mem_type(type), H5S_ALL, H5S_ALL, H5P_DEFAULT, data), where(name));
  }
  dset.close_checked(where(name));
}

H5DatasetInfo H5Group::dataset_info(const std::string& name) const {
  check_name(name, where("."));
  H5Handle dset(QS_H5(H5Dopen2(h_.id(), name.c_str(), H5P_DEFAULT), where(name)), H5Dclose);
  H5Handle type(QS_H5(H5Dget_type(dset.id()), where(name)), H5Tclose);
  H5Handle space(QS_H5(H5Dget_space(dset.id()), where(name)), H5Sclose);
  H5DatasetInfo info;
  const H5T_class_t cls = H5Tget_class(type.id());
  const size_t size = H5Tget_size(type.id());
  if (cls == H5T_INTEGER) {
    const bool is_signed = H5Tget_sign(type.id()) == H5T_SGN_2;
    if (!is_signed && size == 1) info.type = H5Type::U8;
    else if (!is_signed && size == 2) info.type = H5Type::U16;
    else if (is_signed && size == 4) info.type = H5Type::I32;
    else if (is_signed && size == 8) info.type = H5Type::I64;
    else fail_input(where(name), ": unsupported integer type (", is_signed ? "signed " : "unsigned ",
                    size, " bytes)");
  } else if (cls == H5T_FLOAT && (size == 4 || size == 8)) {
    info.type = size == 4 ? H5Type::F32 : H5Type::F64;
  } else {
    fail_input(where(name), ": unsupported element type (HDF5 class ", int(cls), ", ", size,
               " bytes)");
  }
  const int nd = QS_H5(H5Sget_simple_extent_ndims(space.id()), where(name));
  std::vector<hsize_t> dims(size_t(nd), 0);
  if (nd > 0) QS_H5(H5Sget_simple_extent_dims(space.id(), dims.data(), nullptr), where(name));
  info.shape.assign(dims.begin(), dims.end());
  return info;
}

void H5Group::read_dataset(const std::string& name, H5Type type, void* out, size_t out_bytes) const {
  const H5DatasetInfo info = dataset_info(name);
  const size_t need = size_t(info.numel()) * h5_type_size(type);
  if (need != out_bytes)
    fail_input(where(name), ": holds ", info.numel(), " elements ", shape_str(info.shape),
               ", expected ", out_bytes / h5_type_size(type));
  if (need == 0) return;
  H5Handle dset(QS_H5(H5Dopen2(h_.id(), name.c_str(), H5P_DEFAULT), where(name)), H5Dclose);
  QS_H5(H5Dread(dset.id(), mem_type(type), H5S_ALL, H5S_ALL, H5P_DEFAULT, out), where(name));
}

namespace {

// Creates (replacing) attribute `attr` of `object` under `loc`, of the given file type.
H5Handle new_attr(hid_t loc, const std::string& object, const std::string& attr, hid_t type,
                  const std::string& what) {
  if (QS_H5(H5Aexists_by_name(loc, object.c_str(), attr.c_str(), H5P_DEFAULT), what) > 0)
    QS_H5(H5Adelete_by_name(loc, object.c_str(), attr.c_str(), H5P_DEFAULT), what);
  H5Handle space(QS_H5(H5Screate(H5S_SCALAR), what), H5Sclose);
  return H5Handle(QS_H5(H5Acreate_by_name(loc, object.c_str(), attr.c_str(), type, space.id(),
                                          H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
                        what),
                  H5Aclose);
}

}  // namespace

void H5Group::set_attr(const std::string& attr, const std::string& value, const std::string& object) {
  const std::string what = where(object) + " attribute " + attr;
  H5Handle type(QS_H5(H5Tcopy(H5T_C_S1), what), H5Tclose);
  QS_H5(H5Tset_size(type.id(), H5T_VARIABLE), what);
  QS_H5(H5Tset_cset(type.id(), H5T_CSET_UTF8), what);
  H5Handle a = new_attr(h_.id(), object, attr, type.id(), what);
  const char* p = value.c_str();
  QS_H5(H5Awrite(a.id(), type.id(), &p), what);
  a.close_checked(what);
}

void H5Group::set_attr(const std::string& attr, int64_t value, const std::string& object) {
  const std::string what = where(object) + " attribute " + attr;
  H5Handle a = new_attr(h_.id(), object, attr, H5T_STD_I64LE, what);
  QS_H5(H5Awrite(a.id(), H5T_NATIVE_INT64, &value), what);
  a.close_checked(what);
}

void H5Group::set_attr(const std::string& attr, double value, const std::string& object) {
  const std::string what = where(object) + " attribute " + attr;
  H5Handle a = new_attr(h_.id(), object, attr, H5T_IEEE_F64LE, what);
  QS_H5(H5Awrite(a.id(), H5T_NATIVE_DOUBLE, &value), what);
  a.close_checked(what);
}

bool H5Group::has_attr(const std::string& attr, const std::string& object) const {
  return QS_H5(H5Aexists_by_name(h_.id(), object.c_str(), attr.c_str(), H5P_DEFAULT),
               where(object) + " attribute " + attr) > 0;
}

namespace {

H5Handle open_attr(hid_t loc, const std::string& object, const std::string& attr,
                   const std::string& what) {
  {
    QuietErrors quiet;
    const htri_t e = H5Aexists_by_name(loc, object.c_str(), attr.c_str(), H5P_DEFAULT);
    if (e <= 0) {
      H5Eclear2(H5E_DEFAULT);
      fail_input(what, ": missing");
    }
  }
  return H5Handle(QS_H5(H5Aopen_by_name(loc, object.c_str(), attr.c_str(), H5P_DEFAULT, H5P_DEFAULT),
                        what),
                  H5Aclose);
}

}  // namespace

std::string H5Group::attr_string(const std::string& attr, const std::string& object) const {
  const std::string what = where(object) + " attribute " + attr;
  H5Handle a = open_attr(h_.id(), object, attr, what);
  H5Handle ftype(QS_H5(H5Aget_type(a.id()), what), H5Tclose);
  if (H5Tget_class(ftype.id()) != H5T_STRING) fail_input(what, ": not a string");
  H5Handle mtype(QS_H5(H5Tcopy(H5T_C_S1), what), H5Tclose);
  if (QS_H5(H5Tis_variable_str(ftype.id()), what) > 0) {
    QS_H5(H5Tset_size(mtype.id(), H5T_VARIABLE), what);
    QS_H5(H5Tset_cset(mtype.id(), H5Tget_cset(ftype.id())), what);
    char* p = nullptr;
    QS_H5(H5Aread(a.id(), mtype.id(), &p), what);
    std::string s = p ? std::string(p) : std::string();
    H5free_memory(p);
    return s;
  }
  const size_t n = H5Tget_size(ftype.id());
  QS_H5(H5Tset_size(mtype.id(), n + 1), what);  // room for the terminator
  QS_H5(H5Tset_strpad(mtype.id(), H5T_STR_NULLTERM), what);
  std::string s(n + 1, '\0');
  QS_H5(H5Aread(a.id(), mtype.id(), s.data()), what);
  s.resize(s.find('\0') == std::string::npos ? n : s.find('\0'));
  return s;
}

int64_t H5Group::attr_int(const std::string& attr, const std::string& object) const {
  const std::string what = where(object) + " attribute " + attr;
  H5Handle a = open_attr(h_.id(), object, attr, what);
  H5Handle ftype(QS_H5(H5Aget_type(a.id()), what), H5Tclose);
  if (H5Tget_class(ftype.id()) != H5T_INTEGER) fail_input(what, ": not an integer");
  int64_t v = 0;
  QS_H5(H5Aread(a.id(), H5T_NATIVE_INT64, &v), what);
  return v;
}

double H5Group::attr_double(const std::string& attr, const std::string& object) const {
  const std::string what = where(object) + " attribute " + attr;
  H5Handle a = open_attr(h_.id(), object, attr, what);
  H5Handle ftype(QS_H5(H5Aget_type(a.id()), what), H5Tclose);
  const H5T_class_t cls = H5Tget_class(ftype.id());
  if (cls != H5T_FLOAT && cls != H5T_INTEGER) fail_input(what, ": not a number");
  double v = 0;
  QS_H5(H5Aread(a.id(), H5T_NATIVE_DOUBLE, &v), what);
  return v;
}

// -------------------------------------------------------------------------- H5File

H5File::~H5File() = default;  // H5Handle closes quietly

H5File H5File::create(const std::string& path, std::shared_ptr<const H5Parallel> parallel) {
  H5File f;
  f.path_ = path;
  f.par_ = std::move(parallel);
  const hid_t fapl = f.par_ ? f.par_->fapl.id() : H5P_DEFAULT;
  const H5Handle fcpl = untimed_create_plist(H5P_FILE_CREATE);
  f.h_ = H5Handle(QS_H5(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, fcpl.id(), fapl),
                        "creating " + path),
                  H5Fclose);
  return f;
}

H5File H5File::open_read(const std::string& path) {
  {
    QuietErrors quiet;
    const htri_t ok = H5Fis_hdf5(path.c_str());
    H5Eclear2(H5E_DEFAULT);
    if (ok <= 0) fail_input(path, ": not a readable HDF5 file");
  }
  H5File f;
  f.path_ = path;
  f.h_ = H5Handle(QS_H5(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), "opening " + path),
                  H5Fclose);
  return f;
}

H5Group H5File::root() const {
  QS_ASSERT(h_.valid(), "HDF5 file ", path_, " is not open");
  const hid_t g = QS_H5(H5Gopen2(h_.id(), "/", H5P_DEFAULT), path_ + ":/");
  return H5Group(H5Handle(g, H5Gclose), path_, "/", par_);
}

void H5File::close() {
  if (!h_.valid()) return;
  {
    QuietErrors quiet;
    const ssize_t open_objects = H5Fget_obj_count(h_.id(), H5F_OBJ_ALL | H5F_OBJ_LOCAL);
    QS_ASSERT(open_objects == 1, path_, " still has ", open_objects - 1,
              " open objects: release every group before closing");
  }
  QS_H5(H5Fflush(h_.id(), H5F_SCOPE_GLOBAL), "flushing " + path_);
  h_.close_checked("closing " + path_);
}

}  // namespace qshard
