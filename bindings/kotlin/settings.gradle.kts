// NOT BUILT HERE: there is no Gradle or Android SDK on these machines.
// `cargo xtask test --only kotlin` builds and tests this folder on the JVM
// without Gradle (see README.md). This file lets the module be built on its
// own by a machine that has Gradle and the Android SDK; an app usually
// includes the module from its own settings instead:
//     include(":poscore")
//     project(":poscore").projectDir = file("path/to/pos-core/bindings/kotlin")

pluginManagement {
    repositories {
        google()
        mavenCentral()
        gradlePluginPortal()
    }
    plugins {
        // Align these with the app. Kotlin 2.4.20 is the compiler the harness tests with.
        id("com.android.library") version "8.7.3"
        id("org.jetbrains.kotlin.android") version "2.4.20"
    }
}

dependencyResolutionManagement {
    repositoriesMode.set(RepositoriesMode.FAIL_ON_PROJECT_REPOS)
    repositories {
        google()
        mavenCentral()
    }
}

rootProject.name = "poscore"
