application "background_processor" {
  service "job_api" {
    listen = "127.0.0.1:8080"
    visibility = "public"
    max_body = "1MiB"
    queues = ["job_queue"]
    behind_proxy = false
    auth = "none"
    status_cache = "job_status"

    streams {
      per_key = 100
      total = 10000
      lifetime = "15m"
    }
  }

  queue "job_queue" {
    max_attempts = 5
    visibility_timeout = "30s"
    max_message_size = "128KiB"
    max_snoozes = 100

    backoff {
      initial = "1s"
      max = "10m"
      multiplier = 2
      jitter = 0.2
    }

    retention {
      succeeded = "1day"
      failed = "7days"
      dead = "14days"
    }
  }

  task "job_worker" {
    timeout = "5m"
    queue = "job_queue"
    concurrency = 10
  }

  kv_cache "job_status" {}

  observer "job_monitor" {
    queues = ["job_queue"]
  }
}
