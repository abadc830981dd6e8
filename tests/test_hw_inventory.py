"""GPU inventory: the simulator's host files, the catalog, backend selection, and NVML where a GPU exists."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gridmesh.hw import (
    GpuDevice,
    GpuUuid,
    HardwareError,
    HostHardware,
    catalog,
    find_model,
    known_models,
    open_backend,
    parse_compute_capability,
)
from gridmesh.hw.catalog import CATALOG_FILE, READING_FILES, hardware_reading
from gridmesh.hw.simulator import SimulatorBackend, load_host_file, parse_host_description

SHARED_FACTS = Path(__file__).resolve().parents[2] / "shared" / "hw-facts"
PACKAGED_DATA = Path(__file__).resolve().parents[1] / "gridmesh" / "hw" / "data"

UUID_RE = re.compile(r"^GPU-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
PCI_RE = re.compile(r"^[0-9A-F]{8}:[0-9A-F]{2}:[0-9A-F]{2}\.[0-7]$")

H100_TOML = """
hostname = "edge-a1"
cpu_count = 32
memory_mib = 262144
[[gpus]]
model = "H100 80GB HBM3"
count = 4
mig_enabled = true
numa_node = 0
[[gpus]]
model = "l4"
count = 2
numa_node = 1
"""


def write(tmp_path: Path, text: str, name: str = "host.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def assert_sane(hw: HostHardware) -> None:
    """What every backend's inventory must satisfy: the contract, whoever produced it."""
    assert hw.hostname
    assert hw.cpu_count >= 1
    assert hw.memory_mib >= 0
    assert [gpu.index for gpu in hw.gpus] == list(range(len(hw.gpus)))
    assert len({gpu.uuid for gpu in hw.gpus}) == len(hw.gpus)
    assert len({gpu.pci_bus_id for gpu in hw.gpus}) == len(hw.gpus)
    for gpu in hw.gpus:
        assert UUID_RE.match(gpu.uuid), gpu.uuid
        assert PCI_RE.match(gpu.pci_bus_id), gpu.pci_bus_id
        assert gpu.model
        assert gpu.memory_mib > 1024
        assert gpu.compute_capability == "" or parse_compute_capability(gpu.compute_capability) is not None
        assert gpu.numa_node >= -1
        assert gpu.mig_capable or not gpu.mig_enabled


# --- simulator ---------------------------------------------------------------------------------------


def test_simulator_inventory_from_host_file(tmp_path: Path) -> None:
    backend = open_backend("simulator", write(tmp_path, H100_TOML))
    hw = backend.inventory()
    backend.close()

    assert_sane(hw)
    assert (hw.hostname, hw.backend, hw.cpu_count, hw.memory_mib) == ("edge-a1", "simulator", 32, 262144)
    assert [gpu.model for gpu in hw.gpus] == ["H100 80GB HBM3"] * 4 + ["L4"] * 2
    h100 = hw.gpus[0]
    # The real memory total read from an H100, not 80 * 1024.
    assert h100.memory_mib == 85520809984 // 2**20 == 81559
    assert (h100.compute_capability, h100.numa_node, h100.mig_capable, h100.mig_enabled) == (
        "9.0",
        0,
        True,
        True,
    )
    l4 = hw.gpus[5]
    assert (l4.memory_mib, l4.compute_capability, l4.numa_node, l4.mig_capable, l4.mig_enabled) == (
        24 * 1024,
        "8.9",
        1,
        False,
        False,
    )
    assert hw.gpu(l4.uuid) == l4


def test_simulator_uuids_are_stable_and_depend_on_hostname(tmp_path: Path) -> None:
    path = write(tmp_path, H100_TOML)
    first = load_host_file(path)
    again = SimulatorBackend.from_file(path).inventory()
    assert first == again

    other = load_host_file(write(tmp_path, H100_TOML.replace("edge-a1", "edge-a2"), "other.toml"))
    assert not {gpu.uuid for gpu in first.gpus} & {gpu.uuid for gpu in other.gpus}


def test_simulator_defaults_to_this_machine(tmp_path: Path) -> None:
    hw = load_host_file(write(tmp_path, '[[gpus]]\nmodel = "T4"\n'))
    assert hw.hostname == socket.gethostname()
    assert hw.cpu_count >= 1
    assert [(gpu.model, gpu.numa_node, gpu.mig_enabled) for gpu in hw.gpus] == [("T4", -1, False)]


def test_simulator_without_host_file_has_no_gpus() -> None:
    hw = open_backend("simulator", None).inventory()
    assert_sane(hw)
    assert hw.gpus == ()
    assert hw.backend == "simulator"


@pytest.mark.parametrize(
    ("text", "field", "allowed"),
    [
        ('[[gpus]]\nmodel = "H900"\n', "gpus[0].model", "H100 80GB HBM3"),
        ('[[gpus]]\nmodel = "L4"\nmig_enabled = true\n', "gpus[0].mig_enabled", "A100-SXM4-80GB"),
        ('[[gpus]]\nmodel = "L4"\ncount = 0\n', "gpus[0].count", ">= 1"),
        ('[[gpus]]\nmodel = "L4"\ncount = true\n', "gpus[0].count", ">= 1"),
        ('[[gpus]]\nmodel = "L4"\nnuma_node = -2\n', "gpus[0].numa_node", ">= -1"),
        ('[[gpus]]\nmodel = "L4"\nmig_enable = true\n', "gpus[0].mig_enable", "mig_enabled"),
        ("[[gpus]]\ncount = 2\n", "gpus[0].model", "required"),
        ('[[gpus]]\nmodel = "L4"\n[[gpus]]\nmodel = "T5"\n', "gpus[1].model", "known: T4"),
        ("cpu_count = 0\n", "cpu_count", ">= 1"),
        ('hostname = ""\n', "hostname", "non-empty"),
        ('gpus = "L4"\n', "gpus", "[[gpus]]"),
        ("gpu_count = 3\n", "gpu_count", "allowed: hostname"),
    ],
)
def test_bad_host_file_names_file_field_and_what_is_allowed(
    tmp_path: Path, text: str, field: str, allowed: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(HardwareError) as caught:
        open_backend("simulator", path)
    message = str(caught.value)
    assert str(path) in message
    assert f"{field}:" in message
    assert allowed in message


def test_unknown_model_lists_every_known_model(tmp_path: Path) -> None:
    with pytest.raises(HardwareError) as caught:
        load_host_file(write(tmp_path, '[[gpus]]\nmodel = "H900"\n'))
    assert all(name in str(caught.value) for name in known_models())


def test_bad_toml_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[[gpus]\nmodel = \n")
    with pytest.raises(HardwareError, match="not valid TOML") as caught:
        load_host_file(path)
    assert str(path) in str(caught.value)


def test_missing_host_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(HardwareError, match="cannot be read") as caught:
        open_backend("simulator", path)
    assert str(path) in str(caught.value)


def test_simulated_pci_ids_stay_distinct_past_one_board(tmp_path: Path) -> None:
    hw = load_host_file(write(tmp_path, '[[gpus]]\nmodel = "B200"\ncount = 20\n'))
    assert_sane(hw)
    assert hw.gpus[0].pci_bus_id == "00000000:18:00.0"
    assert hw.gpus[8].pci_bus_id == "00000001:18:00.0"


@given(
    hostname=st.from_regex(r"[a-z][a-z0-9-]{0,30}", fullmatch=True),
    groups=st.lists(st.tuples(st.sampled_from(known_models()), st.integers(1, 12)), max_size=5),
)
def test_any_valid_description_gives_a_sane_stable_inventory(
    hostname: str, groups: list[tuple[str, int]]
) -> None:
    data = {"hostname": hostname, "gpus": [{"model": model, "count": count} for model, count in groups]}
    hw = parse_host_description(data, "generated")
    assert_sane(hw)
    assert len(hw.gpus) == sum(count for _, count in groups)
    assert parse_host_description(data, "generated") == hw


# --- catalog -----------------------------------------------------------------------------------------


def test_catalog_loads_with_sane_models() -> None:
    models = catalog()
    assert tuple(models) == known_models()
    assert "H100 80GB HBM3" in models
    for model in models.values():
        assert model.memory_gib > 0
        assert model.memory_mib >= model.memory_gib * 1000
        assert model.vendor in {"nvidia", "amd"}
        if model.vendor == "nvidia":
            assert parse_compute_capability(model.compute_capability) is not None
        else:
            assert model.compute_capability == ""
            assert not model.mig_capable
    h100 = models["H100 80GB HBM3"]
    assert (h100.read_from_hardware, h100.memory_mib, h100.mig_max_instances) == (True, 81559, 7)
    assert models["A100-SXM4-80GB"].memory_mib == 80 * 1024


def test_find_model_is_forgiving_about_case_and_vendor_prefix() -> None:
    h100 = catalog()["H100 80GB HBM3"]
    assert find_model("H100 80GB HBM3") is h100
    assert find_model("h100 80gb hbm3") is h100
    assert find_model("NVIDIA H100 80GB HBM3") is h100  # as NVML names it
    assert find_model("  nvidia  h100   80GB hbm3 ") is h100
    assert find_model("Tesla T4") is catalog()["T4"]
    assert find_model("H100") is None
    assert find_model("") is None


def test_hardware_reading_is_the_h100_fixture() -> None:
    reading = hardware_reading("h100 80gb hbm3")
    assert reading is not None
    assert reading["memory_slices"] == 8
    assert {p["name"] for p in reading["gpu_instance_profiles"]} >= {"1g.10gb", "3g.40gb", "7g.80gb"}
    assert hardware_reading("L4") is None


def test_compute_capability_compares_as_numbers() -> None:
    assert parse_compute_capability("10.0") == (10, 0)
    parsed = [parse_compute_capability(cc) for cc in ("9.0", "10.0", "8.9")]
    assert sorted(cc for cc in parsed if cc is not None) == [(8, 9), (9, 0), (10, 0)]
    assert parse_compute_capability("") is None
    assert parse_compute_capability("9") is None
    assert parse_compute_capability("9.x") is None


@pytest.mark.skipif(not SHARED_FACTS.is_dir(), reason=f"{SHARED_FACTS} is not present")
@pytest.mark.parametrize("name", [CATALOG_FILE, *READING_FILES])
def test_packaged_data_is_byte_identical_to_shared_facts(name: str) -> None:
    assert (PACKAGED_DATA / name).read_bytes() == (SHARED_FACTS / name).read_bytes()


def test_gpu_device_refuses_mig_on_a_non_mig_gpu() -> None:
    with pytest.raises(ValueError, match="not MIG capable"):
        GpuDevice(
            index=0,
            uuid=GpuUuid("GPU-00000000-0000-0000-0000-000000000000"),
            model="L4",
            memory_mib=24576,
            compute_capability="8.9",
            pci_bus_id="00000000:18:00.0",
            numa_node=-1,
            mig_capable=False,
            mig_enabled=True,
        )


# --- backend selection and NVML ----------------------------------------------------------------------


def nvml_gpu_count() -> int:
    """GPUs NVML sees here, 0 when NVML cannot be loaded or initialised."""
    try:
        backend = open_backend("nvml", None)
    except HardwareError:
        return 0
    try:
        return len(backend.inventory().gpus)
    finally:
        backend.close()


def test_auto_uses_nvml_with_gpus_else_the_simulator(tmp_path: Path) -> None:
    backend = open_backend("auto", write(tmp_path, H100_TOML))
    try:
        if nvml_gpu_count() > 0:
            assert backend.name == "nvml"
        else:
            assert backend.name == "simulator"
            assert backend.inventory().hostname == "edge-a1"
    finally:
        backend.close()


def test_unknown_backend_kind_lists_the_allowed_ones() -> None:
    with pytest.raises(HardwareError, match="allowed: auto, nvml, simulator"):
        open_backend("rocm", None)


@pytest.mark.gpu
def test_nvml_inventory_is_read_only_and_sane() -> None:
    if nvml_gpu_count() == 0:
        pytest.skip("NVML is not available or reports no GPU here")
    backend = open_backend("nvml", None)
    try:
        first = backend.inventory()
        second = backend.inventory()
    finally:
        backend.close()
    assert_sane(first)
    assert first.backend == "nvml"
    assert len(first.gpus) >= 1
    # Reading twice changes nothing and reads the same: identity is stable.
    assert first == second
    for gpu in first.gpus:
        assert parse_compute_capability(gpu.compute_capability) is not None
        known = find_model(gpu.model)
        if known is not None:
            # The catalog's memory is rounded GiB, or exact where it was read from such a card.
            assert abs(gpu.memory_mib - known.memory_mib) <= known.memory_mib // 10
    backend.close()  # closing twice is harmless


# --- NVML mapping, with the library's answers replayed ---------------------------------------------------
# No GPU here, so the NVML *library* is replaced at its boundary by answers a real driver gives (the H100
# values are the reading in hw-facts). Errors are pynvml's own classes, so the mapping of NOT_SUPPORTED
# and of real failures is exercised as it will be on a GPU host. The gpu-marked test above covers the rest.


class ReplayedNvml:
    """Per-GPU answers; an exception instance is raised instead of returned."""

    def __init__(self, gpus: list[dict[str, object]]) -> None:
        self.gpus = gpus
        self.inits = 0
        self.shutdowns = 0

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import pynvml

        def answer(key: str) -> object:
            def call(handle: int) -> object:
                value = self.gpus[handle][key]
                if isinstance(value, BaseException):
                    raise value
                return value

            return call

        def init() -> None:
            self.inits += 1

        def shutdown() -> None:
            self.shutdowns += 1

        def not_supported(*args: object) -> object:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)

        monkeypatch.setattr(pynvml, "nvmlInit", init)
        monkeypatch.setattr(pynvml, "nvmlShutdown", shutdown)
        # Answers this replay does not cover (affinity, NVLink, MIG profiles, events) read as NOT_SUPPORTED; the
        # fake NVML surface (tests/hw_contract) covers them. NUMA falls back to sysfs: point it nowhere.
        for name in ("nvmlDeviceGetCpuAffinity", "nvmlDeviceGetNvLinkState", "nvmlDeviceGetGpuInstanceProfileInfo",
                     "nvmlDeviceGetMaxMigDeviceCount", "nvmlEventSetCreate"):
            monkeypatch.setattr(pynvml, name, not_supported)
        monkeypatch.setattr("gridmesh.hw.nvml.SYSFS_PCI_DEVICES", Path("/nonexistent"))
        monkeypatch.setattr(pynvml, "nvmlDeviceGetCount", lambda: len(self.gpus))
        monkeypatch.setattr(pynvml, "nvmlDeviceGetHandleByIndex", lambda index: index)
        for key in (
            "Name",
            "UUID",
            "PciInfo",
            "MemoryInfo",
            "CudaComputeCapability",
            "NumaNodeId",
            "MigMode",
        ):
            monkeypatch.setattr(pynvml, f"nvmlDeviceGet{key}", answer(key))


class Struct:
    def __init__(self, **fields: object) -> None:
        self.__dict__.update(fields)


def replayed_gpu(**overrides: object) -> dict[str, object]:
    gpu: dict[str, object] = {
        "Name": "NVIDIA H100 80GB HBM3",
        "UUID": "GPU-6a0f5b1e-2c3d-4e5f-8a9b-0c1d2e3f4a5b",
        "PciInfo": Struct(busId="00000000:1B:00.0"),
        "MemoryInfo": Struct(total=85520809984),
        "CudaComputeCapability": (9, 0),
        "NumaNodeId": 0,
        "MigMode": [0, 0],
    }
    gpu.update(overrides)
    return gpu


def test_nvml_inventory_maps_what_the_driver_says(monkeypatch: pytest.MonkeyPatch) -> None:
    import pynvml

    not_supported = pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
    replay = ReplayedNvml(
        [
            replayed_gpu(MigMode=[1, 1]),
            replayed_gpu(
                Name=b"NVIDIA L4",  # older nvidia-ml-py releases answer bytes
                UUID="GPU-11111111-2222-3333-4444-555555555555",
                PciInfo=Struct(busId=b"00000000:3A:00.0"),
                MemoryInfo=Struct(total=23034 * 2**20),
                CudaComputeCapability=(8, 9),
                NumaNodeId=pynvml.NVMLError(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND),
                MigMode=not_supported,
            ),
            replayed_gpu(
                Name="NVIDIA Future GPU",
                UUID="GPU-99999999-2222-3333-4444-555555555555",
                PciInfo=Struct(busId="00000000:5D:00.0"),
                NumaNodeId=not_supported,
            ),
        ]
    )
    replay.install(monkeypatch)

    backend = open_backend("auto", None)
    hw = backend.inventory()
    backend.close()
    backend.close()

    assert (replay.inits, replay.shutdowns) == (1, 1)
    assert_sane(hw)
    assert hw.backend == "nvml"
    h100, l4, future = hw.gpus
    assert h100 == GpuDevice(
        index=0,
        uuid=GpuUuid("GPU-6a0f5b1e-2c3d-4e5f-8a9b-0c1d2e3f4a5b"),
        model="H100 80GB HBM3",  # the catalog's name, so requests match real and simulated hosts alike
        memory_mib=81559,
        compute_capability="9.0",
        pci_bus_id="00000000:1B:00.0",
        numa_node=0,
        mig_capable=True,
        mig_enabled=True,
    )
    assert (l4.model, l4.pci_bus_id, l4.compute_capability) == ("L4", "00000000:3A:00.0", "8.9")
    assert (l4.numa_node, l4.mig_capable, l4.mig_enabled) == (-1, False, False)
    assert (future.model, future.numa_node, future.mig_capable, future.mig_enabled) == (
        "NVIDIA Future GPU",
        -1,
        True,
        False,
    )


def test_nvml_failure_names_the_call_and_the_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    import pynvml

    replay = ReplayedNvml(
        [replayed_gpu(), replayed_gpu(UUID=pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST))]
    )
    replay.install(monkeypatch)
    backend = open_backend("nvml", None)
    try:
        with pytest.raises(HardwareError, match="NVML nvmlDeviceGetUUID failed for GPU 1: GPU is lost"):
            backend.inventory()
    finally:
        backend.close()
    with pytest.raises(HardwareError, match="after close"):
        backend.inventory()


def test_auto_falls_back_when_nvml_sees_no_gpu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    replay = ReplayedNvml([])
    replay.install(monkeypatch)
    backend = open_backend("auto", write(tmp_path, H100_TOML))
    assert backend.name == "simulator"
    assert (replay.inits, replay.shutdowns) == (1, 1)  # the probe let go of NVML


# --- topology in the host file, the AMD backend's absence ---------------------------------------------------------


def test_nvlink_groups_and_numa_nodes_give_peers_and_cpu_affinity() -> None:
    hw = parse_host_description({"hostname": "hgx", "cpu_count": 8, "gpus": [
        {"model": "H100 80GB HBM3", "count": 2, "numa_node": 0, "nvlink": True},
        {"model": "H100 80GB HBM3", "count": 1, "numa_node": 1, "nvlink": True},
        {"model": "L4", "count": 1},
    ]}, "generated")
    assert_sane(hw)
    a, b, c, l4 = hw.gpus
    assert a.nvlink_peers == (b.pci_bus_id, c.pci_bus_id) and c.nvlink_peers == (a.pci_bus_id, b.pci_bus_id)
    assert l4.nvlink_peers == ()
    assert (a.cpu_affinity, c.cpu_affinity, l4.cpu_affinity) == ((0, 1, 2, 3), (4, 5, 6, 7), tuple(range(8)))
    with pytest.raises(HardwareError, match="nvlink: must be true or false"):
        parse_host_description({"gpus": [{"model": "L4", "nvlink": "yes"}]}, "generated")


def test_the_amd_backend_without_amd_smi_says_so() -> None:
    try:
        import amdsmi  # type: ignore[import-not-found]  # noqa: F401
    except (ImportError, OSError):
        pass
    else:
        pytest.skip("amdsmi is installed here")
    with pytest.raises(HardwareError, match="cannot import amdsmi"):
        open_backend("amd", None)


def test_a_simulated_host_built_in_code_may_name_any_model() -> None:
    device = GpuDevice(index=0, uuid=GpuUuid("GPU-00000000-0000-0000-0000-000000000001"), model="Future GPU",
                       memory_mib=1024, compute_capability="12.0", pci_bus_id="00000000:18:00.0", numa_node=-1,
                       mig_capable=False, mig_enabled=False)
    hw = HostHardware(hostname="h", backend="simulator", gpus=(device,), cpu_count=1, memory_mib=1)
    backend = SimulatorBackend(hw)
    assert backend.inventory() == hw
    assert backend.sample()[0].memory_free_mib == 1024
