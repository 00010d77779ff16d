// Not built on these machines (no Android SDK): reference code.
// Open this folder (android-demo/) in Android Studio; see README.md.

pluginManagement {
    repositories {
        google()
        mavenCentral()
        gradlePluginPortal()
    }
    plugins {
        id("com.android.application") version "8.7.3"
        id("com.android.library") version "8.7.3"
        // Kotlin 2.4.20 is the compiler the JVM harness builds the model with.
        id("org.jetbrains.kotlin.android") version "2.4.20"
        id("org.jetbrains.kotlin.plugin.compose") version "2.4.20"
    }
}

dependencyResolutionManagement {
    repositoriesMode.set(RepositoriesMode.FAIL_ON_PROJECT_REPOS)
    repositories {
        google()
        mavenCentral()
    }
}

rootProject.name = "poscore-android-demo"

// The library's Android module (bindings/kotlin): generated bindings + libpos_ffi.so per ABI,
// which must be made before Gradle runs (bindings/kotlin/README.md, "In an Android app").
include(":poscore")
project(":poscore").projectDir = file("../bindings/kotlin")

// The app model: plain Kotlin, compiled and tested on the JVM by `cargo xtask test`.
include(":model")
// The Compose UI and the platform glue.
include(":app")
