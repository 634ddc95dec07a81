//! Rust core of the `docker_rs` ZenML orchestrator.
//!
//! The core runs a DAG of containers described by a [`spec::RunSpec`] on a
//! [`engine::ContainerEngine`] and reports what happens as [`events::Event`]s. The
//! Python module `zenml_docker_rs._core` is defined at the bottom of this file when the
//! `python` feature is on. It is the only way in from Python, and its typed stub
//! `python/zenml_docker_rs/_core.pyi` documents it.

pub mod engine;
pub mod error;
pub mod events;
pub mod logs;
pub mod scheduler;
pub mod spec;

#[cfg(feature = "python")]
mod python {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex, OnceLock};
    use std::time::Duration;

    use pyo3::create_exception;
    use pyo3::exceptions::{PyConnectionError, PyRuntimeError, PyValueError};
    use pyo3::intern;
    use pyo3::prelude::*;
    use pyo3::types::{PyDict, PyList};
    use tokio::runtime::Runtime;
    use tokio::sync::mpsc;

    use crate::engine::docker::DockerEngine;
    use crate::engine::{ContainerEngine, StopSignal, StopTrigger};
    use crate::error::Error;
    use crate::events::{join_output, Delivered, Event, OutputStream, OutputText};
    use crate::scheduler;
    use crate::spec::RunSpec;

    create_exception!(_core, SpecError, PyValueError, "The run spec is invalid.");
    create_exception!(
        _core,
        DockerUnavailableError,
        PyConnectionError,
        "The Docker daemon cannot be reached."
    );
    create_exception!(
        _core,
        ImageUnavailableError,
        PyRuntimeError,
        "An image is missing and could not be pulled."
    );
    create_exception!(
        _core,
        EngineError,
        PyRuntimeError,
        "A Docker API call failed."
    );
    create_exception!(
        _core,
        NetworkUnavailableError,
        PyRuntimeError,
        "A network a container should join does not exist."
    );

    /// Events buffered between the run and Python. When full, the run waits for Python
    /// to take events, which bounds memory whatever the steps print.
    const EVENT_BUFFER: usize = 4096;

    /// Maximum number of events handed to Python in one `next_events` call.
    const EVENT_BATCH: usize = 4096;

    /// Output bytes after which a batch is handed over even if more events wait.
    const EVENT_BATCH_OUTPUT_BYTES: usize = 1 << 20;

    fn to_py_err(error: Error) -> PyErr {
        let message = error.to_string();
        match error {
            Error::InvalidSpec(_) => SpecError::new_err(message),
            Error::DockerUnavailable { .. } => DockerUnavailableError::new_err(message),
            Error::NetworkUnavailable { .. } => NetworkUnavailableError::new_err(message),
            Error::ImageUnavailable { .. } => ImageUnavailableError::new_err(message),
            Error::Container { .. } | Error::DockerApi { .. } | Error::Internal(_) => {
                EngineError::new_err(message)
            }
        }
    }

    /// Returns the process's one tokio runtime. Runs outlive the Python calls that start
    /// them, so the runtime lives as long as the process.
    fn runtime() -> &'static Runtime {
        static RUNTIME: OnceLock<Runtime> = OnceLock::new();
        RUNTIME.get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("zenml-docker-rs")
                .build()
                .expect("cannot start the tokio runtime")
        })
    }

    fn parse_spec(spec: &Bound<'_, PyAny>) -> PyResult<RunSpec> {
        let spec: RunSpec = pythonize::depythonize(spec)
            .map_err(|e| SpecError::new_err(format!("invalid run spec: {e}")))?;
        spec.validate().map_err(to_py_err)?;
        Ok(spec)
    }

    /// Validates a run spec without running it; raises `SpecError` naming the problem.
    #[pyfunction]
    fn validate_spec(spec: &Bound<'_, PyAny>) -> PyResult<()> {
        parse_spec(spec).map(|_| ())
    }

    /// Checks that the Docker daemon responds and returns the address that was used.
    #[pyfunction]
    #[pyo3(signature = (docker_host=None))]
    fn check_docker(py: Python<'_>, docker_host: Option<String>) -> PyResult<String> {
        py.detach(|| {
            runtime().block_on(async {
                let engine = DockerEngine::connect(docker_host.as_deref()).await?;
                Ok(engine.host().to_string())
            })
        })
        .map_err(to_py_err)
    }

    /// Returns the distinct values of `values`, sorted, so each is checked once.
    fn distinct<'a>(values: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
        let mut values: Vec<&str> = values.collect();
        values.sort_unstable();
        values.dedup();
        values
    }

    /// Connects to Docker, makes sure every image of `spec` is present (pulling missing
    /// ones) and every network exists, so that these errors come before any container
    /// starts.
    async fn prepare(spec: &RunSpec, docker_host: Option<&str>) -> Result<DockerEngine, Error> {
        let engine = DockerEngine::connect(docker_host).await?;
        for image in distinct(spec.steps.iter().map(|s| s.container.image.as_str())) {
            engine.ensure_image(image).await?;
        }
        let networks = spec
            .steps
            .iter()
            .filter_map(|s| s.container.network.as_deref());
        for network in distinct(networks) {
            engine.ensure_network(network).await?;
        }
        Ok(engine)
    }

    /// Validates `spec`, connects to Docker and makes sure every image and network is
    /// present, without starting anything.
    #[pyfunction]
    #[pyo3(signature = (spec, docker_host=None))]
    fn preflight(
        py: Python<'_>,
        spec: &Bound<'_, PyAny>,
        docker_host: Option<String>,
    ) -> PyResult<()> {
        let spec = parse_spec(spec)?;
        py.detach(|| runtime().block_on(prepare(&spec, docker_host.as_deref())))
            .map(|_| ())
            .map_err(to_py_err)
    }

    /// Validates `spec`, connects to Docker, makes sure every image and network is
    /// present, and starts the run. Returns a `RunHandle` to follow it.
    #[pyfunction]
    #[pyo3(signature = (spec, docker_host=None))]
    fn start_run(
        py: Python<'_>,
        spec: &Bound<'_, PyAny>,
        docker_host: Option<String>,
    ) -> PyResult<RunHandle> {
        let spec = Arc::new(parse_spec(spec)?);
        let engine = py
            .detach(|| runtime().block_on(prepare(&spec, docker_host.as_deref())))
            .map_err(to_py_err)?;

        let (events_tx, events_rx) = mpsc::channel(EVENT_BUFFER);
        let (cancel_trigger, cancel) = StopSignal::new();
        let (drain_trigger, drain) = StopSignal::new();
        let run_id = spec.run_id.clone();
        let controls = scheduler::RunControls { cancel, drain };
        runtime().spawn(scheduler::run(spec, Arc::new(engine), events_tx, controls));
        Ok(RunHandle {
            run_id,
            events: Mutex::new(events_rx),
            cancel: cancel_trigger,
            drain: drain_trigger,
        })
    }

    /// Returns every container, running or not, that carries all of `labels`, as dicts.
    #[pyfunction]
    #[pyo3(signature = (labels, docker_host=None))]
    fn find_containers<'py>(
        py: Python<'py>,
        labels: BTreeMap<String, String>,
        docker_host: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let records = py
            .detach(|| {
                runtime().block_on(async {
                    let engine = DockerEngine::connect(docker_host.as_deref()).await?;
                    engine.find_containers(&labels).await
                })
            })
            .map_err(to_py_err)?;
        pythonize::pythonize(py, &records)
            .map_err(|e| PyRuntimeError::new_err(format!("cannot convert containers: {e}")))
    }

    /// Stops and removes the containers with the given ids; returns the removed ids.
    #[pyfunction]
    #[pyo3(signature = (ids, grace_period_secs=10, docker_host=None))]
    fn stop_and_remove(
        py: Python<'_>,
        ids: Vec<String>,
        grace_period_secs: u32,
        docker_host: Option<String>,
    ) -> PyResult<Vec<String>> {
        py.detach(|| {
            runtime().block_on(async {
                let engine = DockerEngine::connect(docker_host.as_deref()).await?;
                engine.stop_and_remove(&ids, grace_period_secs).await
            })
        })
        .map_err(to_py_err)
    }

    /// A started run. Take its events with `next_events` until it returns `None`.
    #[pyclass(module = "zenml_docker_rs._core")]
    struct RunHandle {
        #[pyo3(get)]
        run_id: String,
        events: Mutex<mpsc::Receiver<Event>>,
        cancel: StopTrigger,
        drain: StopTrigger,
    }

    #[pymethods]
    impl RunHandle {
        /// Waits up to `timeout` seconds for events and returns those available, as
        /// dicts. Returns an empty list when none came in time, and `None` once the run
        /// has ended and every event was taken. The GIL is released while waiting.
        fn next_events<'py>(
            &self,
            py: Python<'py>,
            timeout: f64,
        ) -> PyResult<Option<Bound<'py, PyList>>> {
            let timeout = Duration::try_from_secs_f64(timeout).map_err(|_| {
                PyValueError::new_err(format!(
                    "invalid timeout {timeout}: use a finite number of seconds, 0 or more"
                ))
            })?;
            let batch = py.detach(|| {
                let mut events = self.events.lock().expect("event receiver lock poisoned");
                runtime().block_on(receive_batch(&mut events, timeout))
            });
            let Some(batch) = batch else {
                return Ok(None);
            };
            let list = PyList::empty(py);
            for delivered in join_output(batch) {
                let object = match delivered {
                    Delivered::Output(output) => output_dict(py, output)?.into_any(),
                    Delivered::Other(event) => pythonize::pythonize(py, &event).map_err(|e| {
                        PyRuntimeError::new_err(format!("cannot convert event: {e}"))
                    })?,
                };
                list.append(object)?;
            }
            Ok(Some(list))
        }

        /// Asks the run to stop: no new step starts and every running container is
        /// stopped and removed. Returns at once; keep taking events until `None` to know
        /// when the cleanup is over.
        fn cancel(&self) {
            self.cancel.fire();
        }

        /// Asks the run to stop gracefully: no new step starts, running steps finish.
        /// Returns at once; keep taking events until `None` to know when it ended.
        fn drain(&self) {
            self.drain.fire();
        }
    }

    impl Drop for RunHandle {
        /// Cancels a run whose handle is dropped before it finished, so its containers
        /// do not outlive every way to observe them.
        fn drop(&mut self) {
            self.cancel.fire();
        }
    }

    /// Builds the "log" dict of joined output lines directly, without going through
    /// serde: it is the event a chatty step sends most.
    fn output_dict(py: Python<'_>, output: OutputText) -> PyResult<Bound<'_, PyDict>> {
        let stream = match output.stream {
            OutputStream::Stdout => "stdout",
            OutputStream::Stderr => "stderr",
        };
        let dict = PyDict::new(py);
        dict.set_item(intern!(py, "kind"), intern!(py, "log"))?;
        dict.set_item(intern!(py, "step"), output.step)?;
        dict.set_item(intern!(py, "stream"), stream)?;
        dict.set_item(intern!(py, "text"), output.text)?;
        dict.set_item(intern!(py, "continued"), output.continued)?;
        Ok(dict)
    }

    fn output_bytes(event: &Event) -> usize {
        match event {
            Event::Log { line, .. } => line.len(),
            _ => 0,
        }
    }

    /// Returns the events that arrive within `timeout` (at least one, if any comes),
    /// or `None` when the channel is closed and empty. A batch ends early once its
    /// output lines reach `EVENT_BATCH_OUTPUT_BYTES`, which bounds the size of the text
    /// handed to Python in one call.
    async fn receive_batch(
        events: &mut mpsc::Receiver<Event>,
        timeout: Duration,
    ) -> Option<Vec<Event>> {
        let first = match tokio::time::timeout(timeout, events.recv()).await {
            Ok(Some(event)) => event,
            Ok(None) => return None,
            Err(_) => return Some(Vec::new()),
        };
        let mut text_bytes = output_bytes(&first);
        let mut batch = vec![first];
        while batch.len() < EVENT_BATCH && text_bytes < EVENT_BATCH_OUTPUT_BYTES {
            match events.try_recv() {
                Ok(event) => {
                    text_bytes += output_bytes(&event);
                    batch.push(event);
                }
                Err(_) => break,
            }
        }
        Some(batch)
    }

    #[pymodule]
    fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
        m.add_function(wrap_pyfunction!(validate_spec, m)?)?;
        m.add_function(wrap_pyfunction!(check_docker, m)?)?;
        m.add_function(wrap_pyfunction!(preflight, m)?)?;
        m.add_function(wrap_pyfunction!(start_run, m)?)?;
        m.add_function(wrap_pyfunction!(find_containers, m)?)?;
        m.add_function(wrap_pyfunction!(stop_and_remove, m)?)?;
        m.add_class::<RunHandle>()?;
        let py = m.py();
        m.add("SpecError", py.get_type::<SpecError>())?;
        m.add(
            "DockerUnavailableError",
            py.get_type::<DockerUnavailableError>(),
        )?;
        m.add(
            "ImageUnavailableError",
            py.get_type::<ImageUnavailableError>(),
        )?;
        m.add("EngineError", py.get_type::<EngineError>())?;
        m.add(
            "NetworkUnavailableError",
            py.get_type::<NetworkUnavailableError>(),
        )?;
        m.add("__version__", env!("CARGO_PKG_VERSION"))?;
        Ok(())
    }
}
