# pinfold agents as a Nomad system job, one per client node with the
# raw_exec driver enabled (plugin "raw_exec" { config { enabled = true } }
# in the client's configuration). raw_exec runs pinfold on the host as the
# user below, outside any container, so pinfold's own rootless sandbox is
# the only isolation of the jobs: the user needs a sub-id range, and
# cgroup v2 limits need the Nomad client to delegate (see README.md).
job "pinfold-agent" {
  type        = "system"
  datacenters = ["dc1"]

  group "agent" {
    task "agent" {
      driver = "raw_exec"
      user   = "pinfold"

      config {
        command = "/usr/bin/pinfold"
        args    = ["agent", "--drain", "10m"]
      }

      env {
        PINFOLD_SERVER = "https://pinfold.example.com"
        PINFOLD_HOME   = "/var/lib/pinfold"
        PINFOLD_LABELS = "nomad"
        PINFOLD_POLICY = "untrusted"
      }

      # The registration token from Nomad Variables, never in the job file.
      template {
        data        = "PINFOLD_REGISTRATION_TOKEN={{ with nomadVar \"nomad/jobs/pinfold-agent\" }}{{ .registration_token }}{{ end }}"
        destination = "secrets/agent.env"
        env         = true
      }

      # Longer than --drain: a stop lets running jobs finish.
      kill_timeout = "11m"
      kill_signal  = "SIGTERM"

      resources {
        cpu    = 2000
        memory = 4096
      }
    }
  }
}
