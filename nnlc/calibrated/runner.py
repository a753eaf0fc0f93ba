"""An onnxruntime session whose weights are fed with every run, plus taps on intermediate values.

The calibrated stage evaluates one network under hundreds of weight settings (each tensor perturbed
alone, then every rate point of a search). Rebuilding a session per setting costs more than running
it, so the float tensors being optimised become graph inputs: a run takes the original inputs and
any weights. Subgraph `Constant`s (Silero's weights live inside `If` branches) become outer-scope
inputs, which ONNX lets subgraphs read. `taps` adds intermediate values (the inputs of the layers
whose Hessians OPTQ needs) to the graph's outputs.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

from nnlc import onnx_io

FEEDABLE_STORAGE = (onnx_io.INITIALIZER, onnx_io.CONSTANT_TENSOR)


class WeightFedSession:
    """Runs `model` with chosen float tensors fed as inputs (`weights`) and optional tapped values.

    `names`: qualified tensor names (`onnx_io.find_tensors`) to feed. Tensors that cannot be fed
    (0-d `value_float` constants, names not unique across subgraphs) stay baked in; `fed` says
    which are fed. Missing weights in a run take their original values.
    """

    def __init__(self, model: onnx.ModelProto, names: Iterable[str], taps: Sequence[str] = (), threads: int = 2):
        records = onnx_io.find_tensors(model)
        model = copy.deepcopy(model)
        wanted = [name for name in names if name in records and records[name].storage in FEEDABLE_STORAGE]
        counts: dict[str, int] = {}  # how often each value name is defined anywhere in the model
        for _, graph in onnx_io.iter_graphs(model.graph):
            defined = [init.name for init in graph.initializer] + [out for node in graph.node for out in node.output]
            for value_name in defined:
                counts[value_name] = counts.get(value_name, 0) + 1
        main_inputs = {value.name for value in model.graph.input}
        self.fed: dict[str, str] = {}  # qualified name -> graph input name
        for name in wanted:
            record = records[name]
            if counts.get(record.onnx_name, 0) == 1 and record.onnx_name not in main_inputs:
                self.fed[name] = record.onnx_name
        fed_by_path: dict[str, set[str]] = {}
        for name in self.fed:
            fed_by_path.setdefault(records[name].graph_path, set()).add(records[name].onnx_name)
        for path, graph in onnx_io.iter_graphs(model.graph):
            names_here = fed_by_path.get(path, set())
            if not names_here:
                continue
            kept = [init for init in graph.initializer if init.name not in names_here]
            del graph.initializer[:]
            graph.initializer.extend(kept)
            nodes = [node for node in graph.node
                     if not (node.op_type == "Constant" and node.output and node.output[0] in names_here)]
            del graph.node[:]
            graph.node.extend(nodes)
        for name, input_name in self.fed.items():
            array = records[name].array
            elem = onnx.helper.np_dtype_to_tensor_dtype(array.dtype) if array.dtype.name != "bfloat16" \
                else onnx.TensorProto.BFLOAT16
            model.graph.input.append(helper.make_tensor_value_info(input_name, elem, list(array.shape)))
        self.originals = {name: records[name].array for name in self.fed}
        types = onnx_io.value_types(model) if taps else {}
        existing_outputs = {value.name for value in model.graph.output}
        self.output_names = [value.name for value in model.graph.output]
        for tap in taps:
            if tap not in existing_outputs:
                model.graph.output.append(helper.make_tensor_value_info(tap, types.get(tap, (onnx.TensorProto.FLOAT, None))[0], None))
                existing_outputs.add(tap)
        self.taps = list(taps)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        self._dtypes = {name: array.dtype for name, array in self.originals.items()}

    def _weight_feeds(self, weights: Mapping[str, np.ndarray] | None) -> dict[str, np.ndarray]:
        feeds = {}
        weights = weights or {}
        for name, input_name in self.fed.items():
            value = weights.get(name)
            if value is None:
                value = self.originals[name]
            feeds[input_name] = np.ascontiguousarray(np.asarray(value, dtype=self._dtypes[name]))
        return feeds

    def run(self, feeds: Mapping[str, np.ndarray], weights: Mapping[str, np.ndarray] | None = None,
            outputs: Sequence[str] | None = None) -> list[np.ndarray]:
        """The graph's outputs (or the named `outputs`, taps included) for one feed."""
        return self.session.run(list(outputs) if outputs is not None else self.output_names,
                                {**feeds, **self._weight_feeds(weights)})

    def run_all(self, feeds_list: Sequence[Mapping[str, np.ndarray]],
                weights: Mapping[str, np.ndarray] | None = None) -> list[list[np.ndarray]]:
        """`run` over a list of feeds (the graph's outputs of each)."""
        weight_feeds = self._weight_feeds(weights)
        return [self.session.run(self.output_names, {**feeds, **weight_feeds}) for feeds in feeds_list]

    def run_stream(self, stream, weights: Mapping[str, np.ndarray] | None = None) -> list[np.ndarray]:
        """A stateful network run free over one `calibration.Stream`: [output 0 of every frame, stacked]."""
        weight_feeds = self._weight_feeds(weights)
        state, first = stream.initial_state, []
        for frame in stream.frames:
            outputs = self.session.run(self.output_names, {stream.frame_input: frame, stream.state_input: state,
                                                           **stream.constants, **weight_feeds})
            first.append(np.asarray(outputs[0]))
            state = outputs[stream.state_output]
        return [np.concatenate([np.reshape(x, (1, -1)) for x in first], axis=0)]
